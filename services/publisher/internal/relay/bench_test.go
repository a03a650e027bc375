package relay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/stream"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(b)
	if _, err := stream.Ensure(ctx, e.js, stream.Spec{Name: "RAW", SubjectPrefix: "raw.events",
		Replicas: 1, DuplicateWindow: 5 * time.Minute, MaxMsgsPerSubject: 100}); err != nil {
		b.Fatal(err)
	}
	seedFast(ctx, b, e, n)
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

	r := e.replica(b, "bench", 30*time.Second, opts(batch))
	r.takeAll(ctx, b)
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

// seedFast writes n events, 1000 per transaction (the benchmark measures the drain,
// not the writers).
func seedFast(ctx context.Context, b testing.TB, e *env, n int) {
	b.Helper()
	aggs := pubtest.NewAggregates(n / 4)
	var evs []event.Envelope
	flush := func() {
		if err := postgres.WithTx(ctx, e.pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, evs...) }); err != nil {
			b.Fatal(err)
		}
		evs = evs[:0]
	}
	for v := int64(1); v <= 4; v++ {
		for i := range aggs.IDs {
			evs = append(evs, pubtest.Event(b, aggs.Owners[i], aggs.IDs[i], v, ""))
			if len(evs) == 1000 {
				flush()
			}
		}
	}
	if len(evs) > 0 {
		flush()
	}
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
		var rw row
		if err := rows.Scan(&rw.eventID, &rw.aggType, &rw.aggID, &rw.version, &rw.eventType, &rw.owner, &rw.payload); err != nil {
			b.Fatal(err)
		}
		out = append(out, r.message(rw))
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// BenchmarkMark measures marking acknowledged rows published, in batches of 500 as the
// drain marks them, on an outbox of 20,000 rows, and reports the time per batch and the
// outbox's size (table plus indexes, with the table of published records) after the
// marks and after a VACUUM. The plan of the first batch's mark, with its buffers, goes
// to the log (-v). Run it with: go test -run '^$' -bench Mark -benchtime 1x -v.
func BenchmarkMark(b *testing.B) {
	for range b.N {
		benchMark(b, 500, 20000)
	}
}

func benchMark(b *testing.B, batch, n int) {
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(b)
	seedFast(ctx, b, e, n)
	if _, err := e.pool.Exec(ctx, "ANALYZE outbox"); err != nil {
		b.Fatal(err)
	}
	r := e.replica(b, "bench", 30*time.Second, opts(batch))
	r.takeAll(ctx, b)
	held := r.leases.Held()
	ids, err := e.pool.Query(ctx, `SELECT event_id, partition FROM outbox ORDER BY created_at`)
	if err != nil {
		b.Fatal(err)
	}
	rows, err := pgx.CollectRows(ids, func(rs pgx.CollectableRow) (row, error) {
		var rw row
		err := rs.Scan((*[16]byte)(&rw.eventID), &rw.partition)
		rw.epoch = held[rw.partition]
		return rw, err
	})
	if err != nil {
		b.Fatal(err)
	}
	size := func() float64 {
		var bytes int64
		if err := e.pool.QueryRow(ctx, `SELECT pg_total_relation_size('outbox') + coalesce(pg_total_relation_size(to_regclass('outbox_published')), 0)`).Scan(&bytes); err != nil {
			b.Fatal(err)
		}
		return float64(bytes) / (1 << 20)
	}
	before := size()

	// The first batch is marked by EXPLAIN ANALYZE, which runs the statement.
	idArr, parts, epochs := fence(rows[:batch])
	plan, err := e.pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, WAL) "+markSQL, idArr, parts, epochs, r.leases.Owner())
	if err != nil {
		b.Fatal(err)
	}
	lines, err := pgx.CollectRows(plan, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("plan of one mark of %d rows:\n%s", batch, strings.Join(lines, "\n"))
	// The top node's WAL line covers the whole statement: a measure of the mark's
	// writes that the machine's load does not blur.
	var walRecords, walFPI, walBytes float64
	for _, l := range lines {
		if i := strings.Index(l, "WAL: "); i >= 0 {
			for _, f := range strings.Fields(l[i+len("WAL: "):]) {
				k, v, _ := strings.Cut(f, "=")
				n, _ := strconv.ParseFloat(v, 64)
				switch k {
				case "records":
					walRecords = n
				case "fpi":
					walFPI = n
				case "bytes":
					walBytes = n
				}
			}
			break
		}
	}

	b.StartTimer()
	start := time.Now()
	for i := batch; i < len(rows); i += batch {
		got, err := r.relay.markPublished(ctx, rows[i:min(i+batch, len(rows))])
		if err != nil {
			b.Fatal(err)
		}
		if got != min(batch, len(rows)-i) {
			b.Fatalf("marked %d rows of %d", got, min(batch, len(rows)-i))
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	after := size()
	if _, err := e.pool.Exec(ctx, "VACUUM outbox"); err != nil {
		b.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, "VACUUM outbox_published"); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(elapsed.Microseconds())/1000/float64((len(rows)-batch)/batch), "ms/mark")
	b.ReportMetric(walRecords/float64(batch), "wal_records/row")
	b.ReportMetric(walFPI, "wal_fpi/mark")
	b.ReportMetric(walBytes/float64(batch), "wal_B/row")
	b.ReportMetric(before, "MiB_before")
	b.ReportMetric(after, "MiB_marked")
	b.ReportMetric(size(), "MiB_vacuumed")
}
