-- Each client's edge policy (rules per bot, operator, category and verification level; the
-- format known AI agents get; the Content-Signal it sends): `settings.edge` of the client's
-- events, as JSON (src/domain/policy.rs). `{}` is the default policy.
ALTER TABLE clients ADD COLUMN edge_policy JSONB NOT NULL DEFAULT '{}';

-- What a visitor was charged under a `charge` rule (`USD 0.01`), as the pay-per-crawl
-- exchange settled it at the edge; settlement itself is not ai-cache's business.
ALTER TABLE visits ADD COLUMN charged_price TEXT;

-- The agent whose Web Bot Auth signature verified (`https://chatgpt.com`), for visits whose
-- verification is `signature`.
ALTER TABLE visits ADD COLUMN signature_agent TEXT;
