package report

import (
	"fmt"
	"sort"
)

// PgProfile is what PostgreSQL did for the run's database during one API phase: its
// backends sampled from pg_stat_activity, and the statistics counters' deltas over the
// phase (issue 13 item 4).
type PgProfile struct {
	Phase      string  `json:"phase"`
	Seconds    float64 `json:"seconds"`
	Samples    int     `json:"samples"`
	IntervalMS float64 `json:"interval_ms"`
	// Waits are the sampled backends grouped by application, state and wait event,
	// most frequent first.
	Waits []Wait `json:"waits"`
	// Statements says why there are no per-statement figures when there are none.
	Statements string       `json:"statements"`
	Database   DBDelta      `json:"database"`
	WAL        WALDelta     `json:"wal"`
	Tables     []TableDelta `json:"tables"`
}

// Wait is one group of sampled backends. Event is "type:event", or "CPU" for an active
// backend that waited on nothing PostgreSQL instruments.
type Wait struct {
	App   string `json:"application_name"`
	State string `json:"state"`
	Event string `json:"wait_event"`
	Count int    `json:"count"`
	// Backends is Count per sample: how many backends were in this group on average.
	Backends float64 `json:"avg_backends"`
	// Share is Count over every non-idle backend sample; 0 for idle groups.
	Share float64 `json:"share_of_busy"`
}

// WaitSample is one backend seen in one sample.
type WaitSample struct{ App, State, EventType, Event string }

// Idle reports whether the backend waited for its client with no transaction open.
func (s WaitSample) Idle() bool { return s.State == "idle" }

// TopWaits groups samples (taken over n samplings) into Waits, most frequent first.
func TopWaits(samples []WaitSample, n int) []Wait {
	type key struct{ app, state, event string }
	counts := map[key]int{}
	busy := 0
	for _, s := range samples {
		ev := "CPU"
		if s.EventType != "" {
			ev = s.EventType + ":" + s.Event
		}
		counts[key{s.App, s.State, ev}]++
		if !s.Idle() {
			busy++
		}
	}
	out := make([]Wait, 0, len(counts))
	for k, c := range counts {
		w := Wait{App: k.app, State: k.state, Event: k.event, Count: c}
		if n > 0 {
			w.Backends = float64(c) / float64(n)
		}
		if k.state != "idle" && busy > 0 {
			w.Share = float64(c) / float64(busy)
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		a, b := out[i], out[j]
		return a.App+"\x00"+a.State+"\x00"+a.Event < b.App+"\x00"+b.State+"\x00"+b.Event
	})
	return out
}

// DBDelta is pg_stat_database's counters of the run's database over the phase.
type DBDelta struct {
	Commits   int64 `json:"xact_commit"`
	Rollbacks int64 `json:"xact_rollback"`
	BlksRead  int64 `json:"blks_read"`
	BlksHit   int64 `json:"blks_hit"`
	Inserted  int64 `json:"tup_inserted"`
	Updated   int64 `json:"tup_updated"`
	Deleted   int64 `json:"tup_deleted"`
	Fetched   int64 `json:"tup_fetched"`
}

// WALDelta is pg_stat_wal over the phase: the whole server's, other databases included.
type WALDelta struct {
	Records    int64 `json:"wal_records"`
	FPI        int64 `json:"wal_fpi"`
	Bytes      int64 `json:"wal_bytes"`
	BufferFull int64 `json:"wal_buffers_full"`
	Writes     int64 `json:"wal_write"`
	Syncs      int64 `json:"wal_sync"`
}

// TableDelta is one table's pg_stat_user_tables and pg_statio_user_tables counters over
// the phase; LiveTup and DeadTup are their values at its end.
type TableDelta struct {
	Table       string `json:"table"`
	Inserted    int64  `json:"n_tup_ins"`
	Updated     int64  `json:"n_tup_upd"`
	HOTUpdated  int64  `json:"n_tup_hot_upd"`
	Deleted     int64  `json:"n_tup_del"`
	SeqScans    int64  `json:"seq_scan"`
	IdxScans    int64  `json:"idx_scan"`
	HeapRead    int64  `json:"heap_blks_read"`
	HeapHit     int64  `json:"heap_blks_hit"`
	IdxRead     int64  `json:"idx_blks_read"`
	IdxHit      int64  `json:"idx_blks_hit"`
	LiveTup     int64  `json:"n_live_tup"`
	DeadTup     int64  `json:"n_dead_tup"`
	Autovacuums int64  `json:"autovacuum_count"`
}

// Busy reports whether anything touched the table over the phase.
func (t TableDelta) Busy() bool {
	return t.Inserted+t.Updated+t.Deleted+t.SeqScans+t.IdxScans+t.HeapHit+t.HeapRead+t.IdxHit+t.IdxRead > 0
}

// pgProfileTables writes the PostgreSQL section.
func (r *Results) pgProfileTables(p func(string, ...any)) {
	pp := r.PgProfile
	if pp == nil {
		return
	}
	per := func(v int64) float64 {
		if pp.Seconds <= 0 {
			return 0
		}
		return float64(v) / pp.Seconds
	}
	p("\n## PostgreSQL during %s (%d samples of pg_stat_activity every %.0f ms over %.1f s)\n\n", pp.Phase, pp.Samples, pp.IntervalMS, pp.Seconds)
	p("| application | state | wait event | avg backends | share of busy samples |\n|---|---|---|---|---|\n")
	for i, w := range pp.Waits {
		if i == 15 {
			break
		}
		share := ""
		if w.State != "idle" {
			share = fmt.Sprintf("%.1f%%", 100*w.Share)
		}
		p("| %s | %s | %s | %.2f | %s |\n", w.App, w.State, w.Event, w.Backends, share)
	}
	d, wal := pp.Database, pp.WAL
	p("\nDatabase: %.0f commits/s, %.0f rollbacks/s, %.0f tuples inserted/s, %.0f updated/s, %.0f deleted/s, blocks %.0f hit/s and %.0f read/s. "+
		"WAL (whole server): %.0f records/s, %.1f MB/s, %.0f full-page images/s, %.0f writes/s, %.0f syncs/s, %d times the WAL buffers were full.\n",
		per(d.Commits), per(d.Rollbacks), per(d.Inserted), per(d.Updated), per(d.Deleted), per(d.BlksHit), per(d.BlksRead),
		per(wal.Records), per(wal.Bytes)/(1<<20), per(wal.FPI), per(wal.Writes), per(wal.Syncs), wal.BufferFull)
	if pp.Statements != "" {
		p("\nPer-statement figures: %s\n", pp.Statements)
	}
	p("\n| table | inserted/s | updated/s (HOT) | deleted/s | seq scans | index scans | heap blocks hit (read) | index blocks hit (read) | live / dead tuples at the end | autovacuums |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range pp.Tables {
		if !t.Busy() {
			continue
		}
		p("| %s | %.0f | %.0f (%.0f) | %.0f | %d | %d | %d (%d) | %d (%d) | %d / %d | %d |\n",
			t.Table, per(t.Inserted), per(t.Updated), per(t.HOTUpdated), per(t.Deleted), t.SeqScans, t.IdxScans,
			t.HeapHit, t.HeapRead, t.IdxHit, t.IdxRead, t.LiveTup, t.DeadTup, t.Autovacuums)
	}
}
