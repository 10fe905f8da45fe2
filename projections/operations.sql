-- The operations read model: reprocessing runs (`reprocess_runs`, written by the API and the
-- planner, read by the API and the CLI) and webhook deliveries (`webhook_deliveries`,
-- written by the delivery stage, read by the API).
--
-- Each statement is a constant of `crate::projections::sql::operations` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: run_columns
-- A run's columns, as `RunRow` reads them.
id, client_id, from_stage, url_prefix, since, until, force, status, total, requested, cursor,
    created_at, planned_at

-- name: run_selection
-- The pages a run selects: `$1` client, `$2` URL prefix, `$3`/`$4` the time range.
client_id = $1 AND status <> 'removed'
    AND ($2::text IS NULL OR starts_with(url, $2))
    AND ($3::timestamptz IS NULL OR last_processed_at >= $3)
    AND ($4::timestamptz IS NULL OR last_processed_at < $4)

-- name: client_exists
-- Whether the client exists.
SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1);

-- name: insert_run
-- A new reprocessing run, as requested.
INSERT INTO reprocess_runs (id, client_id, from_stage, url_prefix, since, until, force,
        created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8);

-- name: delete_run
-- A run whose request event could not be published.
DELETE FROM reprocess_runs WHERE id = $1;

-- name: run_outcomes
-- How a run's pages ended, counted by outcome.
SELECT reprocess_outcome, count(*) FROM pages WHERE reprocess_run_id = $1
    GROUP BY reprocess_outcome;

-- name: insert_run_if_absent
-- A run as the planner first sees it (the API may have written it).
INSERT INTO reprocess_runs (id, client_id, from_stage, url_prefix, since, until, force,
        created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING;

-- name: run_planning
-- The planner starts: the run's total is known.
UPDATE reprocess_runs SET status = 'planning', total = $2, updated_at = now()
    WHERE id = $1;

-- name: run_progress
-- The planner requested one more batch of pages.
UPDATE reprocess_runs SET cursor = $2, requested = requested + $3, updated_at = now()
    WHERE id = $1;

-- name: run_planned
-- Every page of the run was requested.
UPDATE reprocess_runs SET status = 'planned', planned_at = now(), updated_at = now()
    WHERE id = $1;

-- name: insert_delivery
-- One webhook delivery attempt and its result.
INSERT INTO webhook_deliveries (webhook_id, client_id, event_id, event_type, attempt,
        succeeded, status_code, error, duration_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: delivered_webhooks
-- Which of these webhooks already got this event.
SELECT DISTINCT webhook_id FROM webhook_deliveries
    WHERE event_id = $1 AND succeeded AND webhook_id = ANY($2);

-- name: webhook_deliveries
-- A webhook's latest delivery attempts.
SELECT id, event_id, event_type, attempt, succeeded, status_code, error, duration_ms,
           attempted_at
    FROM webhook_deliveries
    WHERE webhook_id = $1 AND ($2::bigint IS NULL OR id < $2)
    ORDER BY id DESC LIMIT $3;

-- name: run
-- A reprocessing run.
SELECT {run_columns} FROM reprocess_runs WHERE id = $1;

-- name: client_runs
-- A client's runs, newest first.
SELECT {run_columns} FROM reprocess_runs WHERE client_id = $1
    ORDER BY created_at DESC LIMIT $2;

-- name: run_next_pages
-- The run's next pages after the cursor `$5`, at most `$6`.
SELECT id FROM pages WHERE {run_selection} AND ($5::uuid IS NULL OR id > $5)
    ORDER BY id LIMIT $6;

-- name: run_count_pages
-- How many pages the run selects.
SELECT count(*) FROM pages WHERE {run_selection};
