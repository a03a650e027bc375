// Package pubtest holds what the publisher's tests share: writing outbox rows as the
// API's writes leave them (the row format of shared/outbox, one transaction per write,
// with the API's wake-up notification), reading a stream back, and checking that every
// row arrived exactly once and in version order per aggregate. Tests only; it talks to
// the real servers the tests start.
package pubtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// Event builds version v of a todo owned by owner (created at v1, updated after).
func Event(t testing.TB, owner, todo uuid.UUID, v int64, notes string) event.Envelope {
	t.Helper()
	typ := event.TodoUpdated
	if v == 1 {
		typ = event.TodoCreated
	}
	now := time.Now().UTC()
	var n *string
	if notes != "" {
		n = &notes
	}
	e, err := event.New(typ, todo, owner, v, now,
		event.TraceContext{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		event.TodoData{ID: todo, UserID: owner, Title: "todo " + strconv.FormatInt(v, 10), Notes: n,
			Priority: "normal", Version: v, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatalf("build event: %v", err)
	}
	return e
}

// Write commits events in one transaction, as the API does, and sends the wake-up
// notification when notify is set.
func Write(ctx context.Context, pool *pgxpool.Pool, notify bool, events ...event.Envelope) error {
	return postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return WriteIn(ctx, tx, notify, events...) })
}

// WriteIn writes the outbox rows of events in tx, and the wake-up notification after
// them when notify is set, as the API's writes do.
func WriteIn(ctx context.Context, tx pgx.Tx, notify bool, events ...event.Envelope) error {
	if err := sharedtest.WriteOutbox(ctx, tx, events...); err != nil {
		return err
	}
	if notify {
		if _, err := tx.Exec(ctx, outbox.NotifySQL, outbox.Channel); err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	return nil
}

// WriteBacklog writes n events, versions 1 to 4 of n/4 todos, 1000 per transaction:
// a backlog for benchmarks that measure the drain, not the writers.
func WriteBacklog(ctx context.Context, t testing.TB, pool *pgxpool.Pool, n int) {
	t.Helper()
	aggs := NewAggregates(n / 4)
	var evs []event.Envelope
	flush := func() {
		if err := Write(ctx, pool, false, evs...); err != nil {
			t.Fatal(err)
		}
		evs = evs[:0]
	}
	for v := int64(1); v <= 4; v++ {
		for i := range aggs.IDs {
			evs = append(evs, Event(t, aggs.Owners[i], aggs.IDs[i], v, ""))
			if len(evs) == 1000 {
				flush()
			}
		}
	}
	if len(evs) > 0 {
		flush()
	}
}

// Aggregates is a set of todos, each with its own owner, written version by version.
type Aggregates struct {
	Owners []uuid.UUID
	IDs    []uuid.UUID
	mu     sync.Mutex
	events []uuid.UUID
}

// NewAggregates returns n todos with random owners (so they spread over partitions).
func NewAggregates(n int) *Aggregates {
	a := &Aggregates{}
	for range n {
		a.Owners = append(a.Owners, uuid.New())
		a.IDs = append(a.IDs, uuid.New())
	}
	return a
}

// EventIDs returns every event id written so far.
func (a *Aggregates) EventIDs() []uuid.UUID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

// WriteVersions writes versions from..to of every aggregate with writers concurrent
// writers, one transaction per event; each aggregate stays with one writer so its
// versions commit in order. It fails t on the first error.
func (a *Aggregates) WriteVersions(ctx context.Context, t testing.TB, pool *pgxpool.Pool, writers int, from, to int64, notify bool) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for v := from; v <= to; v++ {
				for i := w; i < len(a.IDs); i += writers {
					e := Event(t, a.Owners[i], a.IDs[i], v, "")
					if err := Write(ctx, pool, notify, e); err != nil {
						errs <- fmt.Errorf("write %s v%d: %w", a.IDs[i], v, err)
						return
					}
					a.mu.Lock()
					a.events = append(a.events, e.ID)
					a.mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Msg is one stored stream message.
type Msg struct {
	Seq     uint64
	ID      string
	Subject string
	Type    string
	Version int64
	Body    []byte
}

// noResponders reports whether err is a request nobody answered, and then waits a
// moment: in a cluster, a consumer just created (or a node just restarted) can miss
// the first pull requests while its host catches up, and the ordered consumer resumes
// where it stopped.
func noResponders(ctx context.Context, t testing.TB, err error) bool {
	t.Helper()
	if !errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	select {
	case <-ctx.Done():
		t.Fatalf("fetch: %v", errors.Join(err, ctx.Err()))
	case <-time.After(100 * time.Millisecond):
	}
	return true
}

// ReadStream returns every message of the stream, in stream order.
func ReadStream(ctx context.Context, t testing.TB, js jetstream.JetStream, name string) []Msg {
	t.Helper()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	out := make([]Msg, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(min(want-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if noResponders(ctx, t, err) {
			continue
		}
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("metadata: %v", err)
			}
			v, err := strconv.ParseInt(m.Headers().Get("Aggregate-Version"), 10, 64)
			if err != nil {
				t.Fatalf("message %d: Aggregate-Version header: %v", md.Sequence.Stream, err)
			}
			out = append(out, Msg{Seq: md.Sequence.Stream, ID: m.Headers().Get(nats.MsgIdHdr), Subject: m.Subject(),
				Type: m.Headers().Get("Event-Type"), Version: v, Body: m.Data()})
		}
		if err := batch.Error(); err != nil && !noResponders(ctx, t, err) {
			t.Fatalf("fetch: %v", err)
		}
		if got == 0 && ctx.Err() != nil {
			t.Fatalf("read %d of %d messages: %v", len(out), want, ctx.Err())
		}
	}
	return out
}

// WaitPublished polls until every outbox row is marked published and the stream holds
// at least want messages, or fails t at ctx's deadline.
func WaitPublished(ctx context.Context, t testing.TB, pool *pgxpool.Pool, js jetstream.JetStream, stream string, want int) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var (
		pending int
		stored  uint64
	)
	for {
		err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&pending)
		if err == nil {
			var st jetstream.Stream
			if st, err = js.Stream(ctx, stream); err == nil {
				var info *jetstream.StreamInfo
				if info, err = st.Info(ctx); err == nil {
					stored = info.State.Msgs
				}
			}
		}
		if err == nil && pending == 0 && stored >= uint64(want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %d published rows: %d rows unpublished, %d messages stored (last error: %v)", want, pending, stored, err)
		case <-tick.C:
		}
	}
}

// CheckExactlyOnceInOrder fails t unless msgs holds each of ids exactly once (counted
// in total and distinct by Nats-Msg-Id) and nothing else, and each aggregate's (each
// subject's) versions appear in ascending order.
func CheckExactlyOnceInOrder(t testing.TB, msgs []Msg, ids []uuid.UUID) {
	t.Helper()
	seen := make(map[string]int, len(msgs))
	for _, m := range msgs {
		seen[m.ID]++
	}
	if len(msgs) != len(ids) || len(seen) != len(ids) {
		t.Errorf("stream holds %d messages with %d distinct ids; want %d each", len(msgs), len(seen), len(ids))
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	for _, id := range ids {
		if seen[id.String()] == 0 {
			t.Errorf("event %s missing from the stream", id)
		}
	}
	last := map[string]int64{}
	for _, m := range msgs {
		if m.Version <= last[m.Subject] {
			t.Errorf("subject %s: version %d at seq %d after version %d", m.Subject, m.Version, m.Seq, last[m.Subject])
		}
		last[m.Subject] = m.Version
	}
}
