-- The pages read model: one row per page (`pages`), its status, stage and content hashes,
-- projected from the PAGES stream by src/projections/pages.rs, and the schedule that reads
-- it (`page_next_due` in the migrations).
--
-- Each statement is a constant of `crate::projections::sql::pages` (build.rs); `{name}`
-- stands for the fragment of that name.
--
-- Each `on_*` statement applies one kind of event to many pages at once: `$1` is a JSON array
-- of records, one per page (distinct pages: the projection groups a batch's events so that no
-- statement sees a page twice), each with the page `id`, the event time `at` and the event's
-- own fields, typed by the statement's record definition.

-- name: page_columns
-- A page's columns, as `PageRow` reads them (`p` the page, `c` its client).
p.id, p.client_id, p.url, p.url_hash, p.status, p.stage, p.source,
    p.sitemap_url, p.lastmod, p.changefreq, p.priority, p.content_hash, p.content_size,
    p.fingerprint, p.last_http_status, p.last_error, p.last_error_kind, p.markdown_hash,
    p.generator, p.title, p.description, p.language, p.simple_html_hash, p.kv_key, p.edge_store,
    p.last_scraped_at, p.last_changed_at, p.last_processed_at, p.kv_uploaded_at,
    p.last_updated_at, p.lastmod_at, p.last_attempt_at, p.last_fetch_ms,
    p.last_refresh_requested_at, p.version, p.created_at, p.updated_at, p.alternates

-- name: next_due
-- When the page is next due (`$1` the shortest refresh interval): none for removed pages and inactive clients.
CASE WHEN p.status = 'removed' OR NOT COALESCE(c.is_active, false) THEN NULL ELSE
    page_next_due(p.last_scraped_at, p.last_attempt_at, p.lastmod_at, p.changefreq, c.refresh_interval_secs, $1) END

-- name: upsert_discovered_many
-- `pages.discovered`: new pages, or known ones seen again (distinct ids: one row each).
INSERT INTO pages (id, client_id, url, url_hash, status, stage, source,
        sitemap_url, lastmod, changefreq, priority, created_at, updated_at, lastmod_at,
        alternates, crawl_run, crawl_depth)
    SELECT id, client_id, url, url_hash, 'discovered', 'discovered', source,
            sitemap_url, lastmod, changefreq, priority, at, at, lastmod_at, alternates,
            crawl_run, crawl_depth
        FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
            $12::jsonb[], $13::uuid[], $14::int[])
            AS d(id, client_id, url, url_hash, source, sitemap_url, lastmod, changefreq,
                priority, at, lastmod_at, alternates, crawl_run, crawl_depth)
    ON CONFLICT (id) DO UPDATE SET
        alternates = COALESCE(EXCLUDED.alternates, pages.alternates),
        crawl_run = COALESCE(EXCLUDED.crawl_run, pages.crawl_run),
        crawl_depth = COALESCE(EXCLUDED.crawl_depth, pages.crawl_depth),
        sitemap_url = COALESCE(EXCLUDED.sitemap_url, pages.sitemap_url),
        lastmod = COALESCE(EXCLUDED.lastmod, pages.lastmod),
        lastmod_at = COALESCE(EXCLUDED.lastmod_at, pages.lastmod_at),
        changefreq = COALESCE(EXCLUDED.changefreq, pages.changefreq),
        priority = COALESCE(EXCLUDED.priority, pages.priority),
        updated_at = EXCLUDED.updated_at;

-- name: sitemap_metadata
-- The sitemap metadata of these pages.
SELECT id, sitemap_url, lastmod, changefreq, priority, alternates FROM pages WHERE id = ANY($1);

-- name: count_for_client
-- How many of a client's pages (`$2`) the filters of `page_filters` keep (`$1` is
-- `list_for_client`'s, unused here).
SELECT count(*) FROM pages p WHERE p.client_id = $2 AND {page_filters};

-- name: counts_by_status_and_stage
-- How many pages each client has in each status and stage (`$1` one client, or NULL for all).
SELECT client_id, status, stage, count(*) AS pages FROM pages
    WHERE ($1::uuid IS NULL OR client_id = $1)
    GROUP BY client_id, status, stage ORDER BY client_id, status, stage;

-- name: refreshable
-- A client's pages a refresh asks for (all but removed ones).
SELECT id FROM pages WHERE client_id = $1 AND status <> 'removed' ORDER BY created_at, id;

-- name: ids_by_id
-- A page's client and id, by id.
SELECT client_id, id FROM pages WHERE id = $1;

-- name: ids_by_url
-- A page's client and id, by URL.
SELECT client_id, id FROM pages WHERE url = $1;

-- name: on_reprocessed
-- `pages.reprocessed`.
UPDATE pages p SET reprocess_run_id = e.run_id, reprocess_outcome = e.outcome,
        reprocessed_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, run_id uuid, outcome text)
    WHERE p.id = e.id;

-- name: on_refresh_requested
-- `pages.refresh_requested`.
UPDATE pages p SET last_refresh_requested_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz)
    WHERE p.id = e.id;

-- name: on_metadata_updated
-- `pages.metadata_updated`.
UPDATE pages p SET sitemap_url = COALESCE(e.sitemap_url, p.sitemap_url), lastmod = e.lastmod,
        changefreq = e.changefreq, priority = e.priority, lastmod_at = e.lastmod_at,
        alternates = e.alternates, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, sitemap_url text, lastmod text,
        changefreq text, priority text, lastmod_at timestamptz, alternates jsonb)
    WHERE p.id = e.id;

-- name: on_scraped
-- `pages.scraped`.
UPDATE pages p SET status = 'fetched', stage = 'scraped', content_hash = e.content_hash,
        content_size = e.content_size, etag = e.etag, last_modified = e.last_modified,
        last_http_status = e.http_status, last_scraped_at = e.fetched_at,
        last_attempt_at = e.fetched_at, last_fetch_ms = e.fetch_ms,
        last_error = NULL, last_error_kind = NULL, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, content_hash text,
        content_size bigint, etag text, last_modified text, http_status int,
        fetched_at timestamptz, fetch_ms int)
    WHERE p.id = e.id;

-- name: on_unchanged
-- `pages.unchanged`.
UPDATE pages p SET status = 'unchanged', last_http_status = e.http_status,
        last_scraped_at = e.fetched_at, last_attempt_at = e.fetched_at, last_error = NULL,
        last_error_kind = NULL, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, http_status int,
        fetched_at timestamptz)
    WHERE p.id = e.id;

-- name: on_scrape_failed
-- `pages.scrape_failed`.
UPDATE pages p SET status = e.status, last_error = e.error, last_error_kind = e.kind,
        last_http_status = COALESCE(e.http_status, p.last_http_status), last_attempt_at = e.at,
        updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, status text, error text,
        kind text, http_status int)
    WHERE p.id = e.id;

-- name: on_removed
-- `pages.removed`.
UPDATE pages p SET status = 'removed', stage = 'removed',
        last_http_status = COALESCE(e.http_status, p.last_http_status), last_error = e.reason,
        last_attempt_at = e.at, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, http_status int, reason text)
    WHERE p.id = e.id;

-- name: on_content_changed
-- `pages.content_changed`.
UPDATE pages p SET
        status = CASE WHEN p.version = e.version AND p.fingerprint = e.fingerprint
            THEN p.status ELSE 'changed' END,
        last_changed_at = CASE WHEN p.version = e.version AND p.fingerprint = e.fingerprint
            THEN p.last_changed_at ELSE e.at END,
        content_hash = e.content_hash, fingerprint = e.fingerprint, version = e.version,
        updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, content_hash text,
        fingerprint text, version int)
    WHERE p.id = e.id AND (p.fingerprint IS NULL OR p.version <= e.version);

-- name: on_markdown_generated
-- `pages.markdown_generated`.
UPDATE pages p SET
        stage = CASE WHEN p.markdown_hash = e.markdown_hash
                AND p.stage IN ('rendered', 'uploaded', 'live')
            THEN p.stage ELSE 'markdown' END,
        markdown_hash = e.markdown_hash, generator = e.generator,
        generator_version = e.generator_version, title = e.title,
        description = e.description, language = e.language, canonical_url = e.canonical_url,
        last_processed_at = e.at, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, markdown_hash text,
        generator text, generator_version text, title text, description text, language text,
        canonical_url text, version int)
    WHERE p.id = e.id AND p.version <= e.version;

-- name: on_html_rendered
-- `pages.html_rendered`.
UPDATE pages p SET
        stage = CASE WHEN p.simple_html_hash = e.html_hash AND p.stage IN ('uploaded', 'live')
            THEN p.stage ELSE 'rendered' END,
        simple_html_hash = e.html_hash, renderer_version = e.renderer_version,
        updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, html_hash text,
        renderer_version text, version int)
    WHERE p.id = e.id AND p.version <= e.version;

-- name: on_kv_uploaded
-- `pages.kv_uploaded`.
UPDATE pages p SET
        stage = CASE WHEN p.stage = 'live' AND p.markdown_hash = e.markdown_hash
                AND p.simple_html_hash = e.html_hash
            THEN p.stage ELSE 'uploaded' END,
        kv_key = e.kv_key, edge_store = e.store, kv_uploaded_at = e.at, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, kv_key text, store text,
        markdown_hash text, html_hash text, version int)
    WHERE p.id = e.id AND p.version <= e.version;

-- name: on_updated
-- `pages.updated`.
UPDATE pages p SET stage = 'live', last_updated_at = e.updated_at, updated_at = e.at
    FROM jsonb_to_recordset($1) AS e(id uuid, at timestamptz, updated_at timestamptz,
        version int)
    WHERE p.id = e.id AND p.version <= e.version;

-- name: find
-- A page with its next due time.
SELECT {page_columns}, {next_due} AS next_due_at
    FROM pages p LEFT JOIN clients c ON c.id = p.client_id WHERE p.id = $2;

-- name: page_filters
-- The page list's filters, each skipped when NULL: whether raw HTML was fetched (`$3`), the
-- status (`$4`), the stage (`$5`), a path prefix (`$6`, matched on the URL's path and query),
-- a LIKE pattern the URL matches case-insensitively (`$7`), whether an AI bot ever read the
-- page (`$8`: a visit answered below 400, whatever scheme and port it came by).
($3::bool IS NULL OR (p.content_hash IS NOT NULL) = $3)
    AND ($4::text IS NULL OR p.status = $4)
    AND ($5::text IS NULL OR p.stage = $5)
    AND ($6::text IS NULL OR starts_with(regexp_replace(p.url, '^https?://[^/]+', ''), $6))
    AND ($7::text IS NULL OR p.url ILIKE $7)
    AND ($8::bool IS NULL OR (page_key(p.url) IN (
            SELECT page_key(v.url) FROM visits v
             WHERE v.client_id = $2 AND v.visitor_type = 'ai_bot'
               AND (v.status IS NULL OR v.status < 400))) = $8)

-- name: list_for_client
-- A page of a client's pages (`$2`), oldest first (or last changed first when `$11`), as the
-- filters of `page_filters` keep them (`$1`: the shortest refresh interval).
SELECT {page_columns}, {next_due} AS next_due_at
    FROM pages p LEFT JOIN clients c ON c.id = p.client_id
    WHERE p.client_id = $2 AND {page_filters}
    ORDER BY CASE WHEN $11::bool THEN p.updated_at END DESC, p.created_at, p.id
    LIMIT $9 OFFSET $10;

-- name: due
-- Up to `$2` pages due now whose refresh was not asked for since they fell due, most overdue first.
SELECT id, client_id, next_due_at, by_lastmod FROM (
        SELECT p.id, p.client_id, p.last_refresh_requested_at,
               {next_due} AS next_due_at,
               COALESCE(p.lastmod_at > p.last_scraped_at AND p.lastmod_at <= now(), false) AS by_lastmod
        FROM pages p JOIN clients c ON c.id = p.client_id
        WHERE c.is_active AND p.status <> 'removed'
    ) d
    WHERE next_due_at <= now()
      AND (last_refresh_requested_at IS NULL OR last_refresh_requested_at < next_due_at)
    ORDER BY next_due_at
    LIMIT $2;

-- name: url_of_any
-- The URL of the first of a client's pages (by id) that exists: the built-in edge redirects to
-- the page under its own scheme.
SELECT url FROM pages WHERE client_id = $1 AND id = ANY($2) ORDER BY array_position($2, id)
    LIMIT 1;

-- name: llms_pages
-- A client's pages that went live and were not removed since, as `/llms.txt` lists them.
SELECT url, title, description, markdown_hash FROM pages
    WHERE client_id = $1 AND last_updated_at IS NOT NULL AND status <> 'removed'
    ORDER BY url LIMIT $2;

-- name: crawl_pages
-- How many pages a crawl has (its budget counts them).
SELECT count(*) FROM pages WHERE client_id = $1 AND crawl_run = $2;

-- name: crawl_progress
-- Where a crawl stands: its pages, how many were fetched, are live, could not be fetched, and
-- the deepest it went.
SELECT count(*) AS pages,
       count(*) FILTER (WHERE last_attempt_at IS NOT NULL) AS fetched,
       count(*) FILTER (WHERE stage = 'live') AS live,
       count(*) FILTER (WHERE status IN ('failed', 'blocked', 'removed')) AS failed,
       coalesce(max(crawl_depth), 0) AS deepest
  FROM pages WHERE client_id = $1 AND crawl_run = $2;
