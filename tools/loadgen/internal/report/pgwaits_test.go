package report

import (
	"strings"
	"testing"
)

// Groups are counted per application, state and wait event; an active backend with no
// wait event is on CPU; shares are of the busy samples only.
func TestTopWaits(t *testing.T) {
	t.Parallel()
	samples := []WaitSample{
		{App: "api", State: "active", EventType: "IO", Event: "WALSync"},
		{App: "api", State: "active", EventType: "IO", Event: "WALSync"},
		{App: "api", State: "active", EventType: "LWLock", Event: "WALWrite"},
		{App: "api", State: "active"},
		{App: "api", State: "idle", EventType: "Client", Event: "ClientRead"},
		{App: "api", State: "idle", EventType: "Client", Event: "ClientRead"},
		{App: "api", State: "idle", EventType: "Client", Event: "ClientRead"},
		{App: "publisher", State: "idle in transaction", EventType: "Client", Event: "ClientRead"},
	}
	got := TopWaits(samples, 2)
	want := []Wait{
		{App: "api", State: "idle", Event: "Client:ClientRead", Count: 3, Backends: 1.5},
		{App: "api", State: "active", Event: "IO:WALSync", Count: 2, Backends: 1, Share: 0.4},
		{App: "api", State: "active", Event: "CPU", Count: 1, Backends: 0.5, Share: 0.2},
		{App: "api", State: "active", Event: "LWLock:WALWrite", Count: 1, Backends: 0.5, Share: 0.2},
		{App: "publisher", State: "idle in transaction", Event: "Client:ClientRead", Count: 1, Backends: 0.5, Share: 0.2},
	}
	if len(got) != len(want) {
		t.Fatalf("TopWaits = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// The section shows the waits, the rates over the phase and only the tables touched.
func TestPgProfileMarkdown(t *testing.T) {
	t.Parallel()
	r := sample()
	r.PgProfile = &PgProfile{Phase: "api 32 clients", Seconds: 10, Samples: 120, IntervalMS: 75,
		Waits:      []Wait{{App: "api", State: "active", Event: "IO:WALSync", Count: 60, Backends: 0.5, Share: 0.25}},
		Statements: "none: not preloaded",
		Database:   DBDelta{Commits: 5000},
		WAL:        WALDelta{Bytes: 20 << 20},
		Tables:     []TableDelta{{Table: "outbox", Inserted: 4000, Updated: 100, HOTUpdated: 50, LiveTup: 9, DeadTup: 1}, {Table: "idle_table"}}}
	md := markdown(t, r,
		"## PostgreSQL during api 32 clients (120 samples of pg_stat_activity every 75 ms over 10.0 s)",
		"| api | active | IO:WALSync | 0.50 | 25.0% |",
		"500 commits/s", "2.0 MB/s", "Per-statement figures: none: not preloaded",
		"| outbox | 400 | 10 (5) | 0 |",
	)
	if strings.Contains(md, "idle_table") {
		t.Error("a table nothing touched is listed")
	}
}
