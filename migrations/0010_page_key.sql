-- A page's URL without its scheme and port (`site.test/blog/a?x=1`): the edge sees a page as
-- http or https, with or without a port, and the visit analytics count those as one page,
-- the client's page with that key. Immutable, so pages can be indexed by it.
CREATE FUNCTION page_key(url TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT regexp_replace(url, '^https?://([^/:?#]+)(:[0-9]+)?', '\1') $$;
CREATE INDEX pages_client_page_key ON pages (client_id, page_key(url));
