package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on user_stats, and on write_refusals, which only the todo cap writes.
const (
	insertStatsSQL  = `INSERT INTO user_stats (user_id, open, completed, version) VALUES ($1, 0, 0, 1)`
	statsVersionSQL = `SELECT version FROM user_stats WHERE user_id = $1`
	// countTodosCappedSQL: see countTodos.
	countTodosCappedSQL = `
WITH counted AS (
    UPDATE user_stats SET open = open + $2, completed = completed + $3, version = version + 1
    WHERE user_id = $1 AND open + completed + $2 + $3 <= $4
    RETURNING version),
refused AS (
    INSERT INTO write_refusals (reason)
    SELECT 'todo cap reached' WHERE NOT EXISTS (SELECT 1 FROM counted)
    RETURNING reason)
SELECT version FROM counted WHERE NOT EXISTS (SELECT 1 FROM refused)`
	countTodosSQL = `
UPDATE user_stats SET open = open + $2, completed = completed + $3, version = version + 1
WHERE user_id = $1
RETURNING version`
	markStatsDeletedSQL = `UPDATE user_stats SET open = 0, completed = 0, version = version + 1, deleted = true WHERE user_id = $1`
	allStatsSQL         = `SELECT user_id, open, completed, version, deleted FROM user_stats`
	// deletedUsersSQL lists the users whose stats row is marked deleted and who have no
	// user row, each with the newest version the outbox holds for them ($1 is
	// event.AggregateUser).
	deletedUsersSQL = `
SELECT s.user_id, coalesce(o.newest, 0)
FROM user_stats s
LEFT JOIN (SELECT aggregate_id, max(aggregate_version) AS newest FROM outbox WHERE aggregate_type = $1 GROUP BY aggregate_id) o
       ON o.aggregate_id = s.user_id
WHERE s.deleted AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id)`
)

// countTodos queues the change of the owner's todo counts, and of their version, that
// a todo write makes: the outbox rows queued after it carry the new counts (see
// insertOutboxSQL). The row lock it takes serializes one user's todo writes. A creation
// (limit > 0) is refused by the server, on the constraint todo_cap_reached, when the
// owner would hold more than limit: the update then changes no row, and the statement
// inserts a row write_refusals never accepts (migration 00010), so that the refusal
// rolls back a transaction that commits without a word from the API (runAtomic). The
// main query reads the insert's output, so that no server may skip it as unused.
// *version receives the stats version the change leaves, the read-your-writes position
// of the write (see package consistency): the update's RETURNING, or a read of the
// row when the counts are unchanged, in the same round trip either way.
func (c *change) countTodos(owner uuid.UUID, open, completed, limit int64, version *int64) {
	scan := func(row pgx.Row) error {
		if err := row.Scan(version); err != nil {
			return fmt.Errorf("read stats version of user %s: %w", owner, err)
		}
		return nil
	}
	switch {
	case open == 0 && completed == 0:
		// The counts are unchanged: the events carry them as they are.
		c.b.Queue(statsVersionSQL, owner).QueryRow(scan)
	case limit > 0:
		c.b.Queue(countTodosCappedSQL, owner, open, completed, limit).QueryRow(scan)
	default:
		c.b.Queue(countTodosSQL, owner, open, completed).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(version); errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("no stats row for user %s", owner)
			} else if err != nil {
				return fmt.Errorf("count todos of user %s: %w", owner, err)
			}
			return nil
		})
	}
}

// delta is how a todo's state counts in its owner's stats: (open, completed).
func delta(t *todos.Todo) (open, completed int64) {
	switch {
	case t == nil:
		return 0, 0
	case t.Completed:
		return 0, 1
	}
	return 1, 0
}

// StatsVersion returns the owner's current stats version: the read-your-writes
// position of a replayed write, which is at least the one the write left.
func (s *Store) StatsVersion(ctx context.Context, owner uuid.UUID) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx, statsVersionSQL, owner).Scan(&v); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, users.ErrNotFound
		}
		return 0, fmt.Errorf("read stats version: %w", err)
	}
	return v, nil
}

// DeletedUser is a user deleted for good (their stats row marked deleted, their user
// row gone), with the newest version of theirs the outbox holds, 0 when none.
type DeletedUser struct {
	ID     uuid.UUID
	Newest int64
}

// DeletedUsers lists every deleted user.
func (s *Store) DeletedUsers(ctx context.Context) ([]DeletedUser, error) {
	rows, err := s.pool.Query(ctx, deletedUsersSQL, event.AggregateUser)
	if err != nil {
		return nil, fmt.Errorf("list deleted users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeletedUser, error) {
		var d DeletedUser
		return d, r.Scan(&d.ID, &d.Newest)
	})
	if err != nil {
		return nil, fmt.Errorf("list deleted users: %w", err)
	}
	return out, nil
}

func allStats(ctx context.Context, db sharedpg.DBTX) (map[uuid.UUID]event.Stats, error) {
	type row struct {
		owner uuid.UUID
		stats event.Stats
	}
	rows, err := db.Query(ctx, allStatsSQL)
	all, err := collect(rows, err, func(r scanner) (row, error) {
		var x row
		return x, r.Scan(&x.owner, &x.stats.Open, &x.stats.Completed, &x.stats.Version, &x.stats.Deleted)
	})
	if err != nil {
		return nil, fmt.Errorf("read user_stats: %w", err)
	}
	out := make(map[uuid.UUID]event.Stats, len(all))
	for _, x := range all {
		out[x.owner] = x.stats
	}
	return out, nil
}
