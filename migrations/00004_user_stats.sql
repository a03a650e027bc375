-- Per-user todo counts, kept by the API in the transaction of every todo write, so that
-- each event can carry its owner's counts (with their own version) and the read model
-- keeps stats by a version-guarded write instead of recounting. The row of a deleted
-- user stays, marked deleted with zero counts: it is that user's last snapshot, as a
-- tombstone is a deleted todo's. No foreign key, so the row outlives its user.
-- Runs unchanged on PostgreSQL 15+ and CockroachDB.

-- +goose Up
CREATE TABLE IF NOT EXISTS user_stats (
    user_id   UUID    PRIMARY KEY,
    open      BIGINT  NOT NULL CHECK (open >= 0),
    completed BIGINT  NOT NULL CHECK (completed >= 0),
    -- Bumped whenever a count changes (and when the user is deleted).
    version   BIGINT  NOT NULL CHECK (version >= 1),
    deleted   BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT user_stats_deleted_check CHECK (NOT deleted OR (open = 0 AND completed = 0))
);

-- Existing users start at version 1 with their current counts.
INSERT INTO user_stats (user_id, open, completed, version)
SELECT u.id,
       COALESCE(sum(CASE WHEN t.id IS NOT NULL AND NOT t.completed THEN 1 ELSE 0 END), 0),
       COALESCE(sum(CASE WHEN t.completed THEN 1 ELSE 0 END), 0),
       1
FROM users u LEFT JOIN todos t ON t.user_id = u.id
GROUP BY u.id
ON CONFLICT (user_id) DO NOTHING;

-- +goose Down
DROP TABLE IF EXISTS user_stats;
