package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// The statements on outbox (the row format the publisher reads: package
// shared/outbox), and the reads of outbox_published and outbox_listeners, the
// publisher's tables, that the API's writes need.
const (
	// insertOutboxSQL writes one row per event and puts the owner's stats snapshot
	// (see event.Stats) into each payload from user_stats, as the statement sees it:
	// after the change's own update of that row when the batch holds one before it,
	// since both run in one transaction. An owner without a user_stats row (no such
	// user) gets no stats.
	insertOutboxSQL = `
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, event_type,
                    partition_key, partition, payload, created_at)
SELECT e.id, e.agg_type, e.agg_id, e.version, e.type, e.owner, e.part,
       CASE WHEN s.user_id IS NULL THEN e.payload
            ELSE e.payload || jsonb_build_object('stats', jsonb_build_object(
                'open', s.open, 'completed', s.completed, 'version', s.version, 'deleted', s.deleted))
       END,
       e.created
FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bigint[], $5::text[],
            $6::uuid[], $7::int[], $8::jsonb[], $9::timestamptz[])
     AS e(id, agg_type, agg_id, version, type, owner, part, payload, created)
LEFT JOIN user_stats s ON s.user_id = e.owner`
	publishedSQL = `SELECT EXISTS (SELECT 1 FROM outbox_published WHERE event_id = $1)`
	// notifySQL is the wake-up, a package constant as TestSQLIsConstant wants (see events).
	notifySQL = outbox.NotifySQL

	// The operator tools' statements (see Tx): the outbox allows one row per
	// aggregate version.
	deletePublishedVersionSQL = `DELETE FROM outbox WHERE aggregate_type = $1 AND aggregate_id = $2 AND aggregate_version = $3 AND published_at IS NOT NULL`
	versionExistsSQL          = `SELECT EXISTS (SELECT 1 FROM outbox WHERE aggregate_type = $1 AND aggregate_id = $2 AND aggregate_version = $3)`
	newestVersionSQL          = `SELECT coalesce(max(aggregate_version), 0) FROM outbox WHERE aggregate_type = $1 AND aggregate_id = $2`
)

// events queues the outbox rows of the change and, when enabled, the notification
// that wakes the publisher at commit. The first event's row identifies the change.
func (c *change) events(events ...event.Envelope) error {
	if len(events) == 0 {
		return nil
	}
	args, err := outboxArgs(events)
	if err != nil {
		return err
	}
	c.b.Queue(insertOutboxSQL, args...)
	if c.notify {
		// outbox.NotifySQL wakes the publisher at commit, at most once, and only while a
		// publisher replica is marked idle and listening (an unexpired row of
		// outbox_listeners, which the publisher writes): pg_notify takes a lock that
		// serializes every notifying commit of the database, which halved commit
		// throughput at 32 clients, and a busy publisher polls at its shortest interval
		// anyway. pg_notify is transactional (a rolled-back transaction sends nothing, and
		// PostgreSQL folds the identical notifications of one transaction into one). It
		// goes after the outbox insert, so that the transaction has its id when it reads
		// the listeners: a publisher drains once more after it marks itself listening, and
		// finds a write that read the listeners before the mark committed. On CockroachDB
		// pg_notify does not exist and the statement fails the transaction: queue it only
		// where outbox.NotifySupported said yes. The publisher does not depend on it for
		// correctness: it also polls. Its parameter is outbox.Channel.
		c.b.Queue(notifySQL, outbox.Channel)
	}
	if c.committed == nil {
		first, pool := events[0], c.pool
		c.committed = func(ctx context.Context) (bool, error) { return committed(ctx, pool, first) }
	}
	return nil
}

// committed tells whether the transaction that inserted e's row committed, when its
// commit's answer was lost (see sharedpg.ProbeInsert): the event id is the row's key,
// chosen before the commit. The publisher may have published the row already, which
// moves it from the outbox to outbox_published: that table is read after the probe,
// so that a row moved while the probe ran (the probe then waits for the move's
// transaction and finds no conflict) is found there.
func committed(ctx context.Context, pool *pgxpool.Pool, e event.Envelope) (bool, error) {
	args, err := outboxArgs([]event.Envelope{e})
	if err != nil {
		return false, err
	}
	found, err := sharedpg.ProbeInsert(ctx, pool, insertOutboxSQL+` ON CONFLICT (event_id) DO NOTHING`, args...)
	if err != nil {
		return false, fmt.Errorf("event %s: %w", e.ID, err)
	}
	if found {
		return true, nil
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("event %s: look up published: %w", e.ID, err)
	}
	defer func() {
		rbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rbCtx) // it only read
	}()
	if err := tx.QueryRow(ctx, publishedSQL, [16]byte(e.ID)).Scan(&found); err != nil {
		return false, fmt.Errorf("event %s: look up published: %w", e.ID, err)
	}
	return found, nil
}

// outboxArgs are the parameters of insertOutboxSQL: one array per column.
func outboxArgs(events []event.Envelope) ([]any, error) {
	n := len(events)
	var (
		// [16]byte, not uuid.UUID: pgx encodes raw arrays directly, while a
		// uuid.UUID element goes through its text form.
		ids        = make([][16]byte, n)
		aggTypes   = make([]string, n)
		aggIDs     = make([][16]byte, n)
		versions   = make([]int64, n)
		types      = make([]string, n)
		owners     = make([][16]byte, n)
		partitions = make([]int32, n)
		payloads   = make([]string, n)
		created    = make([]time.Time, n)
	)
	for i, e := range events {
		b, err := e.Encode()
		if err != nil {
			return nil, err
		}
		ids[i], aggTypes[i], aggIDs[i], versions[i], types[i] = e.ID, e.AggregateType, e.AggregateID, e.Version, e.Type
		owners[i], partitions[i], payloads[i], created[i] = e.OwnerID, outbox.PartitionOf(e.OwnerID), string(b), e.OccurredAt
	}
	return []any{ids, aggTypes, aggIDs, versions, types, owners, partitions, payloads, created}, nil
}

// Emit writes one outbox row per event, each with its owner's stats snapshot, as the
// API's writes do; the publisher finds them by polling.
func (t *Tx) Emit(ctx context.Context, events ...event.Envelope) error {
	if len(events) == 0 {
		return nil
	}
	args, err := outboxArgs(events)
	if err != nil {
		return err
	}
	if _, err := t.tx.Exec(ctx, insertOutboxSQL, args...); err != nil {
		return fmt.Errorf("insert %d outbox rows: %w", len(events), err)
	}
	return nil
}

// TakeVersion makes room in the outbox for e, which allows one row per aggregate
// version: a published row of e's version is deleted, since e replaces it. An
// unpublished one is kept and reported pending: the publisher is about to deliver that
// very version.
func (t *Tx) TakeVersion(ctx context.Context, e event.Envelope) (pending bool, err error) {
	tag, err := t.tx.Exec(ctx, deletePublishedVersionSQL, e.AggregateType, e.AggregateID, e.Version)
	if err != nil {
		return false, fmt.Errorf("replace published outbox row of %s %s: %w", e.AggregateType, e.AggregateID, err)
	}
	if tag.RowsAffected() > 0 {
		return false, nil
	}
	if err := t.tx.QueryRow(ctx, versionExistsSQL, e.AggregateType, e.AggregateID, e.Version).Scan(&pending); err != nil {
		return false, fmt.Errorf("look up outbox row of %s %s: %w", e.AggregateType, e.AggregateID, err)
	}
	return pending, nil
}

// NewestVersion returns the highest version of the aggregate that the outbox holds,
// published or not, 0 when none.
func (t *Tx) NewestVersion(ctx context.Context, aggType string, id uuid.UUID) (int64, error) {
	var newest int64
	if err := t.tx.QueryRow(ctx, newestVersionSQL, aggType, id).Scan(&newest); err != nil {
		return 0, fmt.Errorf("newest outbox version of %s %s: %w", aggType, id, err)
	}
	return newest, nil
}
