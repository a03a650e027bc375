package outboxdb_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/outboxdb"
	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

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
	ctx := sharedtest.Context(b, 5*time.Minute)
	pool, _ := dbtest.NewPool(b)
	pubtest.WriteBacklog(ctx, b, pool, n)
	if _, err := pool.Exec(ctx, "ANALYZE outbox"); err != nil {
		b.Fatal(err)
	}
	const owner = "bench"
	if err := outboxdb.EnsureLeases(ctx, pool, outbox.Partitions); err != nil {
		b.Fatal(err)
	}
	held, err := outboxdb.AcquireLeases(ctx, pool, owner, 5*time.Minute, outbox.Partitions)
	if err != nil || len(held) != outbox.Partitions {
		b.Fatalf("acquired %d leases: %v", len(held), err)
	}
	ids, err := pool.Query(ctx, `SELECT event_id, partition FROM outbox ORDER BY created_at`)
	if err != nil {
		b.Fatal(err)
	}
	rows, err := pgx.CollectRows(ids, func(rs pgx.CollectableRow) (outboxdb.Row, error) {
		var rw outboxdb.Row
		err := rs.Scan((*[16]byte)(&rw.EventID), &rw.Partition)
		rw.Epoch = held[rw.Partition]
		return rw, err
	})
	if err != nil {
		b.Fatal(err)
	}
	size := func() float64 {
		var bytes int64
		if err := pool.QueryRow(ctx, `SELECT pg_total_relation_size('outbox') + coalesce(pg_total_relation_size(to_regclass('outbox_published')), 0)`).Scan(&bytes); err != nil {
			b.Fatal(err)
		}
		return float64(bytes) / (1 << 20)
	}
	before := size()

	// The first batch is marked by EXPLAIN ANALYZE, which runs the statement.
	idArr, parts, epochs := outboxdb.Fence(rows[:batch])
	plan, err := pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, WAL) "+outboxdb.MarkSQL, idArr, parts, epochs, owner)
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
		got, err := outboxdb.MarkPublished(ctx, pool, rows[i:min(i+batch, len(rows))], owner)
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
	if _, err := pool.Exec(ctx, "VACUUM outbox"); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "VACUUM outbox_published"); err != nil {
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
