-- Sign-in (issue 15 item 1): a user may set a password, stored as an argon2id hash in
-- the PHC string format, which records its own parameters so that they can be raised
-- later without invalidating the hashes made before. A table of its own, not a column
-- of users: the users row is what events carry and what its ETag versions, and a
-- password is neither. Runs unchanged on PostgreSQL 13+ and CockroachDB.

-- +goose Up
CREATE TABLE IF NOT EXISTS user_passwords (
    user_id    UUID        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash       TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE IF EXISTS user_passwords;
