-- What the dashboard reads.
--
-- The bytes the edge answered a visit with (the body's length; NULL when the edge did not
-- report it, as for every visit recorded before this column).
ALTER TABLE visits ADD COLUMN bytes BIGINT;

-- The host a URL names, lower case and without `www.` (`https://www.Perplexity.ai/x` →
-- `perplexity.ai`); NULL when it names none. Visits' referrers are matched by it against the
-- catalogue's list of AI assistants (`catalogue/referrers.json`).
CREATE FUNCTION url_host(url TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT regexp_replace(lower(substring(url from
              '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)')), '^www\.', '') $$;
