-- What the scraper and the scheduler need of a page, and when it is due again.
ALTER TABLE pages
    ADD COLUMN lastmod_at                 TIMESTAMPTZ,   -- the sitemap lastmod, parsed
    ADD COLUMN last_attempt_at            TIMESTAMPTZ,   -- last fetch attempt, whatever its outcome
    ADD COLUMN last_fetch_ms              INTEGER,       -- duration of the last successful fetch
    ADD COLUMN last_refresh_requested_at  TIMESTAMPTZ;   -- last pages.refresh_requested

-- When a page is due for a refresh (NULL: never, or not yet fetched at all):
-- its last fetch (or attempt) plus the client's refresh interval, shortened by the sitemap's
-- changefreq but never below `min_secs`; or at once when the sitemap's lastmod (if not in the
-- future) is newer than the last fetch. One definition, used by the scheduler and by every read of page state.
CREATE FUNCTION page_next_due(
    last_scraped_at TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    lastmod_at TIMESTAMPTZ,
    changefreq TEXT,
    refresh_secs BIGINT,
    min_secs BIGINT
) RETURNS TIMESTAMPTZ LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN COALESCE(last_scraped_at, last_attempt_at) IS NULL THEN NULL
        -- A lastmod in the future says nothing yet (else the page would be due forever).
        WHEN lastmod_at IS NOT NULL AND last_scraped_at IS NOT NULL
             AND lastmod_at > last_scraped_at AND lastmod_at <= now()
            THEN last_scraped_at
        ELSE COALESCE(last_scraped_at, last_attempt_at) + make_interval(secs => GREATEST(
            LEAST(min_secs, refresh_secs),
            LEAST(refresh_secs, CASE changefreq
                WHEN 'always' THEN 0 WHEN 'hourly' THEN 3600 WHEN 'daily' THEN 86400
                WHEN 'weekly' THEN 604800 WHEN 'monthly' THEN 2592000
                ELSE refresh_secs END)))
    END
$$;

CREATE INDEX pages_refresh_idx ON pages (client_id, last_scraped_at) WHERE status <> 'removed';
