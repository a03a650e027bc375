package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func todoEvent(t *testing.T, owner uuid.UUID, version int64) event.Envelope {
	t.Helper()
	id := uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	e, err := event.New(event.TodoCreated, id, owner, version, now, event.TraceContext{},
		event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Version: version, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// emit commits the outbox rows of events in a transaction of their own.
func emit(ctx context.Context, t *testing.T, pool *pgxpool.Pool, events ...event.Envelope) {
	t.Helper()
	if err := postgres.New(pool, false).InTx(ctx, func(tx *postgres.Tx) error { return tx.Emit(ctx, events...) }); err != nil {
		t.Fatalf("emit: %v", err)
	}
}

func TestEmitWritesOneRowPerEvent(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	owner := uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)

	var events []event.Envelope
	for v := int64(1); v <= 3; v++ {
		id := uuid.New()
		e, err := event.New(event.TodoCreated, id, owner, v, now, event.TraceContext{RequestID: "r"},
			event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Version: v, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	emit(ctx, t, pool, events...)

	for _, want := range events {
		var (
			aggType, evType string
			aggID, key      uuid.UUID
			version         int64
			partition       int32
			payload         []byte
			created         time.Time
			published       *time.Time
			attempts        int
		)
		err := pool.QueryRow(ctx, `SELECT aggregate_type, aggregate_id, aggregate_version, event_type, partition_key,
		        partition, payload, created_at, published_at, attempts FROM outbox WHERE event_id = $1`, want.ID).
			Scan(&aggType, &aggID, &version, &evType, &key, &partition, &payload, &created, &published, &attempts)
		if err != nil {
			t.Fatalf("read row %s: %v", want.ID, err)
		}
		if aggType != event.AggregateTodo || aggID != want.AggregateID || version != want.Version || evType != want.Type ||
			key != owner || partition != outbox.PartitionOf(owner) || !created.Equal(now) || published != nil || attempts != 0 {
			t.Fatalf("row %s = %s %s v%d %s %s p%d %v %v %d", want.ID, aggType, aggID, version, evType, key, partition, created, published, attempts)
		}
		got, err := event.Decode(payload)
		if err != nil {
			t.Fatalf("payload does not decode: %v", err)
		}
		var a, b any
		_ = json.Unmarshal(got.Data, &a)
		_ = json.Unmarshal(want.Data, &b)
		if got.ID != want.ID || got.Trace != want.Trace || !jsonEqual(a, b) {
			t.Fatalf("payload = %+v, want %+v", got, want)
		}
		if got.Stats != nil {
			t.Fatalf("an owner without a user_stats row got stats %+v", *got.Stats)
		}
	}
}

func TestEmitCarriesTheOwnersStatsAsTheTransactionSeesThem(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	owner := uuid.New()
	now := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := pool.Exec(ctx, `INSERT INTO user_stats (user_id, open, completed, version) VALUES ($1, 2, 5, 9)`, owner); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	e, err := event.New(event.TodoUpdated, id, owner, 2, now, event.TraceContext{},
		event.TodoData{ID: id, UserID: owner, Title: "t", Priority: "low", Completed: true, CompletedAt: &now, Version: 2, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	// The change's own update of the counts comes first in the transaction: the
	// snapshot must be the one after it.
	err = sharedpg.WithTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE user_stats SET open = open - 1, completed = completed + 1, version = version + 1 WHERE user_id = $1`, owner); err != nil {
			return err
		}
		return postgres.Emit(ctx, tx, e)
	})
	if err != nil {
		t.Fatalf("insert: %v", err)
	}
	var payload []byte
	if err := pool.QueryRow(ctx, `SELECT payload FROM outbox WHERE event_id = $1`, e.ID).Scan(&payload); err != nil {
		t.Fatal(err)
	}
	got, err := event.Decode(payload)
	if err != nil {
		t.Fatalf("payload does not decode: %v", err)
	}
	want := event.Stats{Open: 1, Completed: 6, Version: 10}
	if got.Stats == nil || *got.Stats != want {
		t.Fatalf("stats = %+v, want %+v", got.Stats, want)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// A write notifies only while a publisher replica is marked idle and listening, and
// until its mark expires: with no mark, a commit pays no pg_notify.
func TestNotifyOnlyWhileAListenerIsMarked(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, time.Minute)
	pool, dbURL := dbtest.NewPool(t)
	listener := listen(ctx, t, dbURL)

	// notified signs up a user, a write with one outbox row (insert and notify queued
	// in one batch), and reports whether its notification arrived. PostgreSQL delivers
	// notifications in commit order, so a marker sent after the write's commit arrives
	// after the write's own notification, if it sent one.
	s := postgres.New(pool, true)
	notified := func() bool {
		t.Helper()
		createUser(ctx, t, s, users.SignUp{Email: uuid.NewString() + "@example.com", DisplayName: "N"})
		if _, err := pool.Exec(ctx, "SELECT pg_notify($1, 'marker')", outbox.Channel); err != nil {
			t.Fatal(err)
		}
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Payload == "marker" {
			return false
		}
		if n, err := listener.WaitForNotification(ctx); err != nil || n.Payload != "marker" {
			t.Fatalf("after the write's notification: %+v, %v; want the marker", n, err)
		}
		return true
	}

	if notified() {
		t.Fatal("a write notified while no publisher was marked listening")
	}
	markListening(ctx, t, pool, "a", time.Minute)
	markListening(ctx, t, pool, "b", time.Minute)
	if !notified() {
		t.Fatal("a write sent no notification while publishers were marked listening")
	}
	unmarkListening(ctx, t, pool, "a")
	if !notified() {
		t.Fatal("a write sent no notification while one publisher was still marked listening")
	}
	unmarkListening(ctx, t, pool, "b")
	if notified() {
		t.Fatal("a write notified after every publisher was unmarked")
	}
	// A mark that has expired (a replica that died idle) no longer costs writes.
	markListening(ctx, t, pool, "dead", 0)
	if notified() {
		t.Fatal("a write notified for an expired mark")
	}
	// Refreshing an expired mark revives it.
	markListening(ctx, t, pool, "dead", time.Minute)
	if !notified() {
		t.Fatal("a write sent no notification after the mark was refreshed")
	}
}

func rows(t *testing.T, pool *pgxpool.Pool, e event.Envelope) int {
	t.Helper()
	return count(t, pool, `SELECT count(*)::int FROM outbox WHERE event_id = $1`, e.ID)
}

// TestCommittedResolvesALostCommit breaks the connection at COMMIT, before and after
// the server ran it: the commit error says the outcome is unknown, and Committed
// then tells the truth.
func TestCommittedResolvesALostCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		fault sharedtest.CommitFault
		want  bool
	}{
		{"commit never reached the server", sharedtest.CommitLost, false},
		{"commit landed, answer lost", sharedtest.AnswerLost, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			proxied, direct, proxy := apitest.ProxiedPool(t)
			ctx := context.Background()
			e := todoEvent(t, uuid.New(), 1)
			proxy.FailNextCommit(tc.fault)
			err := sharedpg.WithTx(ctx, proxied, func(tx pgx.Tx) error { return postgres.Emit(ctx, tx, e) })
			if !errors.Is(err, sharedpg.ErrCommitUnknown) {
				t.Fatalf("err = %v, want ErrCommitUnknown", err)
			}
			got, err := postgres.Committed(ctx, proxied, e)
			if err != nil {
				t.Fatalf("committed: %v", err)
			}
			if got != tc.want {
				t.Fatalf("Committed = %v, want %v", got, tc.want)
			}
			if n := rows(t, direct, e); (n == 1) != tc.want {
				t.Fatalf("%d rows in the outbox, want committed=%v", n, tc.want)
			}
		})
	}
}

// TestCommittedWaitsForATransactionInProgress: while the writer's transaction still
// holds its row, the probe waits for its end instead of answering "not committed".
func TestCommittedWaitsForATransactionInProgress(t *testing.T) {
	t.Parallel()
	for _, commit := range []bool{true, false} {
		pool, _ := dbtest.NewPool(t)
		ctx := context.Background()
		e := todoEvent(t, uuid.New(), 1)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := postgres.Emit(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
		type answer struct {
			committed bool
			err       error
		}
		probed := make(chan answer, 1)
		go func() {
			c, err := postgres.Committed(ctx, pool, e)
			probed <- answer{c, err}
		}()
		// The probe must be waiting on the writer's row lock before the writer ends.
		waitForLockWait(t, pool)
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		a := <-probed
		if a.err != nil || a.committed != commit {
			t.Fatalf("writer committed=%v: probe answered %v, %v", commit, a.committed, a.err)
		}
	}
}

// TestCommittedSeesAnotherWriterOfTheSameVersion: when another event took the
// aggregate's version, the lost one cannot have committed.
func TestCommittedSeesAnotherWriterOfTheSameVersion(t *testing.T) {
	t.Parallel()
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	winner := todoEvent(t, uuid.New(), 1)
	loser := winner
	loser.ID = uuid.New()
	emit(ctx, t, pool, winner)
	if c, err := postgres.Committed(ctx, pool, loser); err != nil || c {
		t.Fatalf("Committed(loser) = %v, %v; want false", c, err)
	}
	if c, err := postgres.Committed(ctx, pool, winner); err != nil || !c {
		t.Fatalf("Committed(winner) = %v, %v; want true", c, err)
	}
	if n := rows(t, pool, loser); n != 0 {
		t.Fatalf("the probe left %d rows behind", n)
	}
}

// TestCommittedFindsAPublishedEvent: the publisher may have moved the row out of the
// outbox (published) before the probe runs, or while it waits on the move.
func TestCommittedFindsAPublishedEvent(t *testing.T) {
	t.Parallel()
	const publish = `
WITH moved AS (
    DELETE FROM outbox WHERE event_id = $1
    RETURNING event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at)
INSERT INTO outbox_published (event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, published_at)
SELECT event_id, partition, aggregate_type, aggregate_id, aggregate_version, event_type, created_at, now() FROM moved`
	pool, _ := dbtest.NewPool(t)
	ctx := context.Background()
	published := todoEvent(t, uuid.New(), 1)
	emit(ctx, t, pool, published)
	if _, err := pool.Exec(ctx, publish, published.ID); err != nil {
		t.Fatal(err)
	}
	if c, err := postgres.Committed(ctx, pool, published); err != nil || !c {
		t.Fatalf("Committed(published) = %v, %v; want true", c, err)
	}
	// Another event of the same version, lost, while the winner is published.
	loser := published
	loser.ID = uuid.New()
	if c, err := postgres.Committed(ctx, pool, loser); err != nil || c {
		t.Fatalf("Committed(loser) = %v, %v; want false", c, err)
	}

	// The move runs while the probe waits on it.
	moving := todoEvent(t, uuid.New(), 1)
	emit(ctx, t, pool, moving)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, publish, moving.ID); err != nil {
		t.Fatal(err)
	}
	probed := make(chan error, 1)
	go func() {
		c, err := postgres.Committed(ctx, pool, moving)
		if err == nil && !c {
			err = errors.New("not committed")
		}
		probed <- err
	}()
	waitForLockWait(t, pool)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-probed; err != nil {
		t.Fatalf("Committed(moved while probing): %v; want true", err)
	}
}

func waitForLockWait(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
		var n int
		err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0, "the probe never waited on the writer's lock"
	})
}
