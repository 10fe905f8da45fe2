-- Whether a client's pages go through a browser before extraction (`never`, `auto`,
-- `always`), and the selector a rendered page is complete with.
ALTER TABLE clients ADD COLUMN render_js TEXT NOT NULL DEFAULT 'never';
ALTER TABLE clients ADD COLUMN render_wait_for TEXT;
