-- The projection runner's own state: where each projection is (`projection_checkpoints`) and
-- the events it could not apply (`projection_failures`), for src/projections/runtime.rs,
-- the rebuild check (verify.rs) and /health.
--
-- Each statement is a constant of `crate::projections::sql::runtime` (build.rs); `{name}`
-- stands for the fragment of that name.

-- name: ensure_checkpoint
-- A projection's checkpoint, made at 0 if new.
INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: checkpoint
-- Where a projection is: the last stream sequence it applied.
SELECT last_seq FROM projection_checkpoints WHERE name = $1;

-- name: checkpoint_for_update
-- The checkpoint, locked for the batch's transaction.
SELECT last_seq FROM projection_checkpoints WHERE name = $1 FOR UPDATE;

-- name: lock_checkpoint
-- Locks the checkpoint for the transaction.
SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE;

-- name: advance_checkpoint
-- Moves the checkpoint to the batch's last sequence.
UPDATE projection_checkpoints SET last_seq = $2, updated_at = now() WHERE name = $1;

-- name: record_failure
-- An event the projection could not apply (skipped, kept here).
INSERT INTO projection_failures (projection, seq, subject, error) VALUES ($1, $2, $3, $4)
    ON CONFLICT (projection, seq) DO UPDATE SET error = EXCLUDED.error, failed_at = now();

-- name: reset_checkpoint
-- A rebuild starts from sequence 0.
INSERT INTO projection_checkpoints (name, last_seq) VALUES ($1, 0)
    ON CONFLICT (name) DO UPDATE SET last_seq = 0, updated_at = now();

-- name: lock_checkpoint_for_reset
-- Locks the checkpoint for the rebuild's reset.
SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE;

-- name: clear_failures
-- A rebuild forgets the projection's failures.
DELETE FROM projection_failures WHERE projection = $1;

-- name: checkpoint_if_any
-- Where a projection is, if it has a checkpoint.
SELECT last_seq FROM projection_checkpoints WHERE name = $1;

-- name: live_checkpoint
-- The live checkpoint, while a rebuild is compared with it.
SELECT last_seq FROM public.projection_checkpoints WHERE name = $1;

-- name: all_checkpoints
-- Every projection's checkpoint, for /health.
SELECT name, last_seq FROM projection_checkpoints;

-- name: async_commit
-- This transaction's commit does not wait for its WAL flush (`Projection::async_commit`).
SET LOCAL synchronous_commit = off;
