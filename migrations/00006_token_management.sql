-- Tokens a user can manage (issue 12 item 5): each token has an id, so that it can be
-- listed and revoked without its secret (a replayed issuance names it); an optional
-- expiry; and when it was last used, at hour precision, so that recording it costs at
-- most one write per token and hour, not one per request.
-- The id's default fills the rows that exist already; the API sets every new one itself.
-- Runs unchanged on PostgreSQL 13+ and CockroachDB (gen_random_uuid is built into both).

-- +goose Up
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS id UUID NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS expires_at TIMESTAMPTZ;
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS last_used_at TIMESTAMPTZ;
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_id_key ON api_tokens (id);

-- +goose Down
DROP INDEX IF EXISTS api_tokens_id_key;
ALTER TABLE api_tokens DROP COLUMN IF EXISTS last_used_at;
ALTER TABLE api_tokens DROP COLUMN IF EXISTS expires_at;
ALTER TABLE api_tokens DROP COLUMN IF EXISTS id;
