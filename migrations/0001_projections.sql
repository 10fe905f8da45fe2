-- Projections (read models) built from the streams. The streams are the source of truth:
-- every row here can be rebuilt with `ai-cache replay projections`.
-- Table and column names follow the original system's schema where it defines them.
-- There are no foreign keys between projection tables: each projection is rebuilt on its
-- own, in any order, from its own stream.

-- Where each projection stands in its stream, written in the same transaction as its rows.
CREATE TABLE projection_checkpoints (
    name        TEXT PRIMARY KEY,
    last_seq    BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events a projection could not apply (undecodable, or rejected by its rules). The
-- checkpoint moves past them, so one bad event never stalls a read model; each is kept here.
CREATE TABLE projection_failures (
    projection  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    error       TEXT NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, seq)
);

CREATE TABLE clients (
    id                              UUID PRIMARY KEY,
    name                            TEXT NOT NULL UNIQUE,
    domain                          TEXT NOT NULL UNIQUE,
    cloudflare_account_id           TEXT,
    cloudflare_api_token_encrypted  BYTEA,   -- Fernet token (Python cryptography compatible)
    cloudflare_kv_namespace_id      TEXT,
    gemini_api_key_encrypted        BYTEA,   -- Fernet token, optional per-client key
    is_active                       BOOLEAN NOT NULL DEFAULT true,
    refresh_interval_secs           BIGINT NOT NULL,
    crawl_rate_per_minute           INTEGER NOT NULL,
    use_gemini                      BOOLEAN NOT NULL DEFAULT false,
    edge_target                     TEXT NOT NULL DEFAULT 'auto',
    allow_subdomains                BOOLEAN NOT NULL DEFAULT false,
    created_at                      TIMESTAMPTZ NOT NULL,
    updated_at                      TIMESTAMPTZ NOT NULL
);

-- Content (raw HTML, Markdown, rendered HTML) lives in the blob store, addressed by the
-- hashes below; the original's raw_html/markdown_content/simple_html columns are replaced
-- by content_hash/markdown_hash/simple_html_hash.
CREATE TABLE pages (
    id                  UUID PRIMARY KEY,            -- derived from (client_id, normalized url)
    client_id           UUID NOT NULL,
    url                 TEXT NOT NULL,
    url_hash            TEXT NOT NULL,               -- SHA-256 of the normalized URL
    status              TEXT NOT NULL,               -- discovered|fetched|unchanged|changed|removed|blocked|failed
    stage               TEXT NOT NULL,               -- last pipeline step: discovered|scraped|markdown|rendered|uploaded|updated|removed
    source              TEXT,
    sitemap_url         TEXT,
    lastmod             TEXT,
    changefreq          TEXT,
    priority            TEXT,
    content_hash        TEXT,                        -- SHA-256 of the raw HTML
    content_size        BIGINT,
    fingerprint         TEXT,                        -- SHA-256 of the extracted main content
    etag                TEXT,
    last_modified       TEXT,
    last_http_status    INTEGER,
    last_error          TEXT,
    last_error_kind     TEXT,
    markdown_hash       TEXT,
    generator           TEXT,
    generator_version   TEXT,
    title               TEXT,
    description         TEXT,
    language            TEXT,
    canonical_url       TEXT,
    simple_html_hash    TEXT,
    renderer_version    TEXT,
    kv_key              TEXT,                        -- e.g. "https/example-com/page"
    edge_store          TEXT,
    last_scraped_at     TIMESTAMPTZ,
    last_changed_at     TIMESTAMPTZ,
    last_processed_at   TIMESTAMPTZ,
    kv_uploaded_at      TIMESTAMPTZ,
    last_updated_at     TIMESTAMPTZ,                 -- last pages.updated
    version             INTEGER NOT NULL DEFAULT 1,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (client_id, url)
);
CREATE INDEX pages_client_idx ON pages (client_id, created_at, id);

CREATE TABLE visits (
    id              UUID PRIMARY KEY,                -- the visits.recorded event id
    page_id         UUID,
    client_id       UUID NOT NULL,
    url             TEXT NOT NULL,
    visitor_type    TEXT NOT NULL,                   -- ai_bot|search_bot|other_bot|human|worker_proxy
    user_agent      TEXT,
    ip_hash         TEXT,                            -- HMAC-SHA256, never the raw IP
    referrer        TEXT,
    bot_name        TEXT,
    operator        TEXT,
    category        TEXT,
    verification    TEXT NOT NULL,
    format_served   TEXT NOT NULL,
    status          INTEGER,
    visited_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX visits_client_time_idx ON visits (client_id, visited_at);
