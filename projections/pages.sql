-- The pages read model: one row per page (`pages`), its status, stage and content hashes,
-- projected from the PAGES stream by src/projections/pages.rs, and the schedule that reads
-- it (`page_next_due` in the migrations).
--
-- Each statement is a constant of `crate::projections::sql::pages` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: page_columns
-- A page's columns, as `PageRow` reads them (`p` the page, `c` its client).
p.id, p.client_id, p.url, p.url_hash, p.status, p.stage, p.source,
    p.sitemap_url, p.lastmod, p.changefreq, p.priority, p.content_hash, p.content_size,
    p.fingerprint, p.last_http_status, p.last_error, p.last_error_kind, p.markdown_hash,
    p.generator, p.title, p.description, p.language, p.simple_html_hash, p.kv_key, p.edge_store,
    p.last_scraped_at, p.last_changed_at, p.last_processed_at, p.kv_uploaded_at,
    p.last_updated_at, p.lastmod_at, p.last_attempt_at, p.last_fetch_ms,
    p.last_refresh_requested_at, p.version, p.created_at, p.updated_at

-- name: next_due
-- When the page is next due (`$1` the shortest refresh interval): none for removed pages and inactive clients.
CASE WHEN p.status = 'removed' OR NOT COALESCE(c.is_active, false) THEN NULL ELSE
    page_next_due(p.last_scraped_at, p.last_attempt_at, p.lastmod_at, p.changefreq, c.refresh_interval_secs, $1) END

-- name: upsert_discovered_many
-- `pages.discovered`: new pages, or known ones seen again (distinct ids: one row each).
INSERT INTO pages (id, client_id, url, url_hash, status, stage, source,
        sitemap_url, lastmod, changefreq, priority, created_at, updated_at, lastmod_at)
    SELECT id, client_id, url, url_hash, 'discovered', 'discovered', source,
            sitemap_url, lastmod, changefreq, priority, at, at, lastmod_at
        FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[])
            AS d(id, client_id, url, url_hash, source, sitemap_url, lastmod, changefreq,
                priority, at, lastmod_at)
    ON CONFLICT (id) DO UPDATE SET
        sitemap_url = COALESCE(EXCLUDED.sitemap_url, pages.sitemap_url),
        lastmod = COALESCE(EXCLUDED.lastmod, pages.lastmod),
        lastmod_at = COALESCE(EXCLUDED.lastmod_at, pages.lastmod_at),
        changefreq = COALESCE(EXCLUDED.changefreq, pages.changefreq),
        priority = COALESCE(EXCLUDED.priority, pages.priority),
        updated_at = EXCLUDED.updated_at;

-- name: sitemap_metadata
-- The sitemap metadata of these pages.
SELECT id, sitemap_url, lastmod, changefreq, priority FROM pages WHERE id = ANY($1);

-- name: count_for_client
-- How many of a client's pages there are (with content or not).
SELECT count(*) FROM pages p WHERE p.client_id = $1 AND ($2::bool IS NULL OR (p.content_hash IS NOT NULL) = $2);

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
-- `pages.reprocessed`: $1 the page id, $2 the event time.
UPDATE pages SET reprocess_run_id = $3, reprocess_outcome = $4, reprocessed_at = $2
    WHERE id = $1;

-- name: on_refresh_requested
-- `pages.refresh_requested`: $1 the page id, $2 the event time.
UPDATE pages SET last_refresh_requested_at = $2 WHERE id = $1;

-- name: on_metadata_updated
-- `pages.metadata_updated`: $1 the page id, $2 the event time.
UPDATE pages SET sitemap_url = COALESCE($3, sitemap_url), lastmod = $4,
        changefreq = $5, priority = $6, lastmod_at = $7, updated_at = $2
    WHERE id = $1;

-- name: on_scraped
-- `pages.scraped`: $1 the page id, $2 the event time.
UPDATE pages SET status = 'fetched', stage = 'scraped', content_hash = $3,
        content_size = $4, etag = $5, last_modified = $6, last_http_status = $7,
        last_scraped_at = $8, last_attempt_at = $8, last_fetch_ms = $9,
        last_error = NULL, last_error_kind = NULL, updated_at = $2
    WHERE id = $1;

-- name: on_unchanged
-- `pages.unchanged`: $1 the page id, $2 the event time.
UPDATE pages SET status = 'unchanged', last_http_status = $3, last_scraped_at = $4,
        last_attempt_at = $4, last_error = NULL, last_error_kind = NULL, updated_at = $2
    WHERE id = $1;

-- name: on_scrape_failed
-- `pages.scrape_failed`: $1 the page id, $2 the event time.
UPDATE pages SET status = $3, last_error = $4, last_error_kind = $5,
        last_http_status = COALESCE($6, last_http_status), last_attempt_at = $2,
        updated_at = $2
    WHERE id = $1;

-- name: on_removed
-- `pages.removed`: $1 the page id, $2 the event time.
UPDATE pages SET status = 'removed', stage = 'removed',
        last_http_status = COALESCE($3, last_http_status), last_error = $4,
        last_attempt_at = $2, updated_at = $2
    WHERE id = $1;

-- name: on_content_changed
-- `pages.content_changed`: $1 the page id, $2 the event time.
UPDATE pages SET
        status = CASE WHEN version = $5 AND fingerprint = $4 THEN status ELSE 'changed' END,
        last_changed_at = CASE WHEN version = $5 AND fingerprint = $4
            THEN last_changed_at ELSE $2 END,
        content_hash = $3, fingerprint = $4, version = $5, updated_at = $2
    WHERE id = $1 AND (fingerprint IS NULL OR version <= $5);

-- name: on_markdown_generated
-- `pages.markdown_generated`: $1 the page id, $2 the event time.
UPDATE pages SET
        stage = CASE WHEN markdown_hash = $3 AND stage IN ('rendered', 'uploaded', 'live')
            THEN stage ELSE 'markdown' END,
        markdown_hash = $3, generator = $4,
        generator_version = $5, title = $6, description = $7, language = $8,
        canonical_url = $9, last_processed_at = $2, updated_at = $2
    WHERE id = $1 AND version <= $10;

-- name: on_html_rendered
-- `pages.html_rendered`: $1 the page id, $2 the event time.
UPDATE pages SET
        stage = CASE WHEN simple_html_hash = $3 AND stage IN ('uploaded', 'live')
            THEN stage ELSE 'rendered' END,
        simple_html_hash = $3, renderer_version = $4, updated_at = $2
    WHERE id = $1 AND version <= $5;

-- name: on_kv_uploaded
-- `pages.kv_uploaded`: $1 the page id, $2 the event time.
UPDATE pages SET
        stage = CASE WHEN stage = 'live' AND markdown_hash = $5 AND simple_html_hash = $6
            THEN stage ELSE 'uploaded' END,
        kv_key = $3, edge_store = $4, kv_uploaded_at = $2, updated_at = $2
    WHERE id = $1 AND version <= $7;

-- name: on_updated
-- `pages.updated`: $1 the page id, $2 the event time.
UPDATE pages SET stage = 'live', last_updated_at = $3, updated_at = $2
    WHERE id = $1 AND version <= $4;

-- name: find
-- A page with its next due time.
SELECT {page_columns}, {next_due} AS next_due_at
    FROM pages p LEFT JOIN clients c ON c.id = p.client_id WHERE p.id = $2;

-- name: list_for_client
-- A page of a client's pages, oldest first; `$3` filters on whether raw HTML was fetched.
SELECT {page_columns}, {next_due} AS next_due_at
    FROM pages p LEFT JOIN clients c ON c.id = p.client_id
    WHERE p.client_id = $2 AND ($3::bool IS NULL OR (p.content_hash IS NOT NULL) = $3)
    ORDER BY p.created_at, p.id LIMIT $4 OFFSET $5;

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
