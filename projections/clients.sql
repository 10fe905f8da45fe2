-- The clients read model: tenants (`clients`), their API keys (`api_keys`, only hashes) and
-- webhooks (`webhooks`), projected from the CLIENTS stream by src/projections/clients.rs,
-- and what a client's deletion removes with it.
--
-- Each statement is a constant of `crate::projections::sql::clients` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: client_columns
-- A client's columns, as `ClientRow` reads them.
id, name, domain, cloudflare_account_id, cloudflare_api_token_encrypted,
    cloudflare_kv_namespace_id, gemini_api_key_encrypted, is_active, refresh_interval_secs,
    crawl_rate_per_minute, use_gemini, edge_target, allow_subdomains, edge_policy,
    render_js, render_wait_for, created_at, updated_at

-- name: key_columns
-- An API key's columns, as `ApiKeyRow` reads them (never the key: only its hash).
id, client_id, name, display_prefix, scopes, created_at, revoked_at

-- name: delete_client_keys
-- A deleted client's API keys go with it.
DELETE FROM api_keys WHERE client_id = $1;

-- name: delete_client_webhooks
-- A deleted client's webhooks go with it.
DELETE FROM webhooks WHERE client_id = $1;

-- name: delete_client
-- `clients.deleted`.
DELETE FROM clients WHERE id = $1;

-- name: insert_key
-- `clients.key_created` (a replay keeps the first).
INSERT INTO api_keys (id, client_id, name, display_prefix, key_hash, scopes, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO NOTHING;

-- name: upsert_webhook
-- `clients.webhook_added` (a key rotation re-encrypts the secret).
INSERT INTO webhooks (id, client_id, url, events, secret_encrypted, created_at)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, events = EXCLUDED.events,
        secret_encrypted = EXCLUDED.secret_encrypted;

-- name: delete_webhook
-- `clients.webhook_removed`.
DELETE FROM webhooks WHERE id = $1 AND client_id = $2;

-- name: revoke_key
-- `clients.key_revoked` (the first revocation time stays).
UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND client_id = $2 AND revoked_at IS NULL;

-- name: upsert_client
-- `clients.registered` and `clients.updated`: the whole state.
INSERT INTO clients (id, name, domain, cloudflare_account_id,
        cloudflare_api_token_encrypted, cloudflare_kv_namespace_id, gemini_api_key_encrypted,
        is_active, refresh_interval_secs, crawl_rate_per_minute, use_gemini, edge_target,
        allow_subdomains, edge_policy, render_js, render_wait_for, created_at, updated_at)
    VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$15,$16,$17,$14,$14)
    ON CONFLICT (id) DO UPDATE SET
        name = EXCLUDED.name, domain = EXCLUDED.domain,
        cloudflare_account_id = EXCLUDED.cloudflare_account_id,
        cloudflare_api_token_encrypted = EXCLUDED.cloudflare_api_token_encrypted,
        cloudflare_kv_namespace_id = EXCLUDED.cloudflare_kv_namespace_id,
        gemini_api_key_encrypted = EXCLUDED.gemini_api_key_encrypted,
        is_active = EXCLUDED.is_active,
        refresh_interval_secs = EXCLUDED.refresh_interval_secs,
        crawl_rate_per_minute = EXCLUDED.crawl_rate_per_minute,
        use_gemini = EXCLUDED.use_gemini, edge_target = EXCLUDED.edge_target,
        allow_subdomains = EXCLUDED.allow_subdomains, edge_policy = EXCLUDED.edge_policy,
        render_js = EXCLUDED.render_js, render_wait_for = EXCLUDED.render_wait_for,
        updated_at = EXCLUDED.updated_at;

-- name: count_clients
-- How many clients there are.
SELECT count(*) FROM clients;

-- name: conflicting_field
-- Whether another client already has this name or domain.
SELECT name = $1, domain = $2 FROM clients
    WHERE (name = $1 OR domain = $2) AND ($3::uuid IS NULL OR id <> $3) LIMIT 1;

-- name: is_active
-- Whether the client is active (none: no such client).
SELECT is_active FROM clients WHERE id = $1;

-- name: client_webhooks
-- A client's webhooks.
SELECT id, client_id, url, events, secret_encrypted, created_at FROM webhooks
    WHERE client_id = $1 ORDER BY created_at, id;

-- name: all_webhooks
-- Every webhook, for the delivery stage.
SELECT id, client_id, url, events, secret_encrypted, created_at FROM webhooks ORDER BY id;

-- name: count_client_keys
-- A client's API keys, counted for the deletion summary.
SELECT count(*) FROM api_keys WHERE client_id = $1;

-- name: client_page_urls
-- A client's page URLs, whose edge entries the deletion removes.
SELECT url FROM pages WHERE client_id = $1;

-- name: delete_client_pages
-- A deleted client's pages.
DELETE FROM pages WHERE client_id = $1;

-- name: delete_client_visits
-- A deleted client's visits.
DELETE FROM visits WHERE client_id = $1;

-- name: find
-- The client with this id.
SELECT {client_columns} FROM clients WHERE id = $1;

-- name: find_by_domain
-- The client with this (normalized) domain.
SELECT {client_columns} FROM clients WHERE domain = $1;

-- name: list
-- A page of clients, oldest first.
SELECT {client_columns} FROM clients ORDER BY created_at, id LIMIT $1 OFFSET $2;

-- name: list_keys
-- A client's API keys, oldest first.
SELECT {key_columns} FROM api_keys WHERE client_id = $1 ORDER BY created_at DESC, id;

-- name: find_key
-- One of a client's API keys.
SELECT {key_columns} FROM api_keys WHERE client_id = $1 AND id = $2;

-- name: find_live_key_by_hash
-- The unrevoked key with this SHA-256 and whether its client is active (authentication).
-- `clients_checkpoint`: the stream sequence the clients projection had applied when read.
SELECT k.id, k.client_id, k.scopes, COALESCE(c.is_active, false) AS client_active,
        COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'clients'), 0)
            AS clients_checkpoint
    FROM api_keys k LEFT JOIN clients c ON c.id = k.client_id
    WHERE k.key_hash = $1 AND k.revoked_at IS NULL;
