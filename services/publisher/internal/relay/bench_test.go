package relay

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// BenchmarkDrain measures the outbox drain rate at several batch sizes beside a raw
// JetStream async publish of the same messages (same subjects, bodies, headers and
// message ids, into a second stream of the same configuration) in the same run, and
// reports the ratio. Run it once per size: go test -run '^$' -bench Drain -benchtime 1x.
func BenchmarkDrain(b *testing.B) {
	for _, bc := range []struct{ batch, events int }{{1, 2000}, {100, 20000}, {500, 20000}} {
		b.Run(fmt.Sprintf("batch=%d", bc.batch), func(b *testing.B) {
			for range b.N {
				benchDrain(b, bc.batch, bc.events)
			}
		})
	}
}

func benchDrain(b *testing.B, batch, n int) {
	b.StopTimer()
	ctx := sharedtest.Context(b, 5*time.Minute)
	e := newEnv(b)
	if _, err := stream.Ensure(ctx, e.js, stream.Spec{Name: "RAW", SubjectPrefix: "raw.events",
		Replicas: 1, DuplicateWindow: 5 * time.Minute, MaxMsgsPerSubject: 100}); err != nil {
		b.Fatal(err)
	}
	pubtest.WriteBacklog(ctx, b, e.pool, n)
	// Statistics, as autovacuum keeps them on a table in service: on a table never
	// analyzed the planner takes the backlog for a few hundred rows and sorts it whole
	// on every claim instead of reading outbox_drain_idx in order.
	if _, err := e.pool.Exec(ctx, "ANALYZE outbox"); err != nil {
		b.Fatal(err)
	}
	msgs := rawMessages(ctx, b, e)

	// Raw: every message published async, then every PubAck awaited, in windows of the
	// same size as the drain's batch so both pay the same round trips.
	rawJS, _ := e.connect(b)
	rawStart := time.Now()
	for i := 0; i < len(msgs); i += max(batch, 1) {
		end := min(i+batch, len(msgs))
		futs := make([]jetstream.PubAckFuture, 0, end-i)
		for _, m := range msgs[i:end] {
			f, err := rawJS.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
		}
	}
	raw := time.Since(rawStart)

	r := e.replicaHoldingAll(ctx, b, "bench", 30*time.Second, opts(batch))
	b.StartTimer()
	start := time.Now()
	for {
		res, err := r.relay.Drain(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if res.Claimed == 0 {
			break
		}
	}
	drain := time.Since(start)
	b.StopTimer()

	rawRate := float64(n) / raw.Seconds()
	drainRate := float64(n) / drain.Seconds()
	b.ReportMetric(rawRate, "raw_ev/s")
	b.ReportMetric(drainRate, "drain_ev/s")
	b.ReportMetric(drainRate/rawRate, "ratio")
}

// rawMessages builds the drain's messages for the RAW stream.
func rawMessages(ctx context.Context, b *testing.B, e *env) []*nats.Msg {
	b.Helper()
	rows, err := e.pool.Query(ctx, `SELECT event_id, aggregate_type, aggregate_id, aggregate_version, event_type, partition_key, payload::text
FROM outbox ORDER BY created_at`)
	if err != nil {
		b.Fatal(err)
	}
	r := &Relay{opts: Options{SubjectPrefix: "raw.events"}}
	var out []*nats.Msg
	for rows.Next() {
		var rw outboxdb.Row
		if err := rows.Scan(&rw.EventID, &rw.AggregateType, &rw.AggregateID, &rw.Version, &rw.EventType, &rw.Owner, &rw.Payload); err != nil {
			b.Fatal(err)
		}
		out = append(out, r.message(rw))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}
