-- Operating the pipeline: reprocessing runs and webhooks.

-- The latest reprocessing run each page went through, and how it ended (pages.reprocessed):
-- a projection column, rebuilt with the rest of `pages`.
ALTER TABLE pages
    ADD COLUMN reprocess_run_id   UUID,
    ADD COLUMN reprocess_outcome  TEXT,     -- updated|unchanged|skipped|removed|failed
    ADD COLUMN reprocessed_at     TIMESTAMPTZ;
CREATE INDEX pages_reprocess_run_idx ON pages (reprocess_run_id) WHERE reprocess_run_id IS NOT NULL;

-- Reprocessing runs: the request (also on the CLIENTS stream as clients.reprocess_requested)
-- and the planner's working state, so a planner that dies resumes after `cursor`. Not a
-- projection: operational state like api rate limits, left alone by `replay projections`.
CREATE TABLE reprocess_runs (
    id           UUID PRIMARY KEY,
    client_id    UUID NOT NULL,
    from_stage   TEXT NOT NULL,                -- scrape|markdown|render|upload
    url_prefix   TEXT,
    since        TIMESTAMPTZ,                  -- on pages.last_processed_at
    until        TIMESTAMPTZ,
    force        BOOLEAN NOT NULL DEFAULT false,
    status       TEXT NOT NULL DEFAULT 'requested',  -- requested|planning|planned
    total        BIGINT,                       -- pages selected (known once planning starts)
    requested    BIGINT NOT NULL DEFAULT 0,    -- pages sent through the pipeline so far
    cursor       UUID,                         -- last page id sent
    created_at   TIMESTAMPTZ NOT NULL,
    planned_at   TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX reprocess_runs_client_idx ON reprocess_runs (client_id, created_at DESC);

-- Webhook endpoints (projection of clients.webhook_added / clients.webhook_removed, owned by
-- the clients projection). The signing secret is a Fernet token, never in clear.
CREATE TABLE webhooks (
    id                UUID PRIMARY KEY,
    client_id         UUID NOT NULL,
    url               TEXT NOT NULL,
    events            TEXT[] NOT NULL,
    secret_encrypted  BYTEA NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhooks_client_idx ON webhooks (client_id);

-- One row per delivery attempt (operational log, not a projection): what was sent where,
-- and what came back.
CREATE TABLE webhook_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    webhook_id   UUID NOT NULL,
    client_id    UUID NOT NULL,
    event_id     UUID NOT NULL,
    event_type   TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    succeeded    BOOLEAN NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    duration_ms  BIGINT NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, id DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (webhook_id, event_id) WHERE succeeded;
