-- Refusals the server raises itself (issue 13): a todo creation runs as one implicit
-- transaction in one round trip (see services/api/internal/postgres, runAtomic), which
-- PostgreSQL commits at the pipeline's Sync when no statement failed. The API cannot
-- refuse such a write after reading a result, so a statement that finds the write
-- refused inserts a row here, and the constraint named for the reason fails it, and
-- with it the whole transaction. The table never holds a row. Runs unchanged on
-- PostgreSQL 13+ and CockroachDB (whose implicit transactions end at Sync since v22.1).

-- +goose Up
CREATE TABLE IF NOT EXISTS write_refusals (
    reason TEXT NOT NULL,
    CONSTRAINT todo_cap_reached CHECK (reason <> 'todo cap reached'),
    CONSTRAINT write_refused CHECK (reason = 'todo cap reached')
);

-- +goose Down
DROP TABLE IF EXISTS write_refusals;
