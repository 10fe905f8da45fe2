-- Per-client API keys, owned by the clients projection (CLIENTS stream). Only the SHA-256 of
-- a key is stored; the key itself is shown once, when it is created.
CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    client_id       UUID NOT NULL,
    name            TEXT,
    display_prefix  TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    scopes          TEXT[] NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ
);
CREATE INDEX api_keys_client_idx ON api_keys (client_id, created_at);
