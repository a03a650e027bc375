package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/services/api/internal/syncstatus"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// readModelEnv is a real FerretDB with a read-model database of the test's own, filled
// the way the projector fills it.
type readModelEnv struct {
	ferret *ferret.Server
	client *mongo.Client
	store  *readside.Store
	db     *mongo.Database
}

func newReadModel(t *testing.T) *readModelEnv {
	t.Helper()
	srv := ferret.StartTest(t)
	client := srv.Client(t)
	name := "read_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	return &readModelEnv{ferret: srv, client: client, store: readside.New(client, name), db: client.Database(name)}
}

func (e *readModelEnv) put(t *testing.T, coll string, docs ...any) {
	t.Helper()
	ctx := sharedtest.Context(t, 10*time.Second)
	if _, err := e.db.Collection(coll).InsertMany(ctx, docs); err != nil {
		t.Fatalf("seed %s: %v", coll, err)
	}
}

func withReadModel(rm httpapi.ReadModel) harnessOpt {
	return func(o *httpapi.Options) { o.ReadModel = rm }
}

func TestLeaderboardAndStats(t *testing.T) {
	t.Parallel()
	rm := newReadModel(t)
	h := newHarness(t, withReadModel(rm.store))
	tokA, a := h.signUp()
	tokB, b := h.signUp()
	tokC, c := h.signUp()
	_, deleted := h.signUp()

	// Before the projection has anything: empty board, zero stats, no freshness headers.
	res := h.do(req{method: "GET", path: "/v1/leaderboard", token: tokA})
	if res.Status != http.StatusOK || res.Header.Get(httpapi.ProjectionSeqHeader) != "" {
		t.Fatalf("empty leaderboard: %d %s %v", res.Status, res.Body, res.Header)
	}
	var st struct {
		UserID                 string  `json:"user_id"`
		Open, Completed, Total int64   `json:"-"`
		UpdatedAt              *string `json:"updated_at"`
	}
	res = h.do(req{method: "GET", path: "/v1/users/me/stats", token: tokC})
	res.json(t, &st)
	if res.Status != http.StatusOK || st.UserID != c.ID || st.UpdatedAt != nil {
		t.Fatalf("stats before projection: %d %s", res.Status, res.Body)
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	rm.put(t, readmodel.CollUsers,
		readmodel.User{ID: a.ID, DisplayName: "Ada", Version: 1},
		readmodel.User{ID: b.ID, DisplayName: "Bob", Version: 1},
		readmodel.User{ID: c.ID, DisplayName: "Cy", Version: 1},
		readmodel.User{ID: deleted.ID, Version: 2, Deleted: true})
	// a and b tie on completed todos: the lower user id ranks first.
	rm.put(t, readmodel.CollStats,
		readmodel.Stats{UserID: a.ID, Completed: 3, Open: 1, Total: 4, Version: 9, UpdatedAt: now},
		readmodel.Stats{UserID: b.ID, Completed: 3, Open: 0, Total: 3, Version: 7, UpdatedAt: now},
		readmodel.Stats{UserID: c.ID, Completed: 1, Open: 5, Total: 6, Version: 8, UpdatedAt: now},
		readmodel.Stats{UserID: deleted.ID, Completed: 99, Deleted: true})
	rm.put(t, readmodel.CollProjection, readmodel.Watermark{ID: readmodel.WatermarkID, StreamSeq: 42, AppliedAt: now, OccurredAt: now})

	first, second := a, b
	if b.ID < a.ID {
		first, second = b, a
	}
	res = h.do(req{method: "GET", path: "/v1/leaderboard?limit=2", token: tokC})
	var lb struct {
		Top []struct {
			Rank        int64  `json:"rank"`
			UserID      string `json:"user_id"`
			DisplayName string `json:"display_name"`
			Completed   int64  `json:"completed"`
		} `json:"top"`
		Me *struct {
			Rank   int64  `json:"rank"`
			UserID string `json:"user_id"`
		} `json:"me"`
	}
	res.json(t, &lb)
	if res.Status != http.StatusOK || len(lb.Top) != 2 || lb.Top[0].UserID != first.ID || lb.Top[1].UserID != second.ID ||
		lb.Top[0].Rank != 1 || lb.Top[1].Rank != 2 || lb.Top[0].Completed != 3 || lb.Me == nil || lb.Me.Rank != 3 || lb.Me.UserID != c.ID {
		t.Fatalf("leaderboard: %d %s", res.Status, res.Body)
	}
	if lb.Top[0].DisplayName == "" {
		t.Fatalf("display name missing: %s", res.Body)
	}
	if res.Header.Get(httpapi.ProjectionSeqHeader) != "42" || res.Header.Get(httpapi.ProjectionWatermarkHeader) != now.Format(time.RFC3339Nano) {
		t.Fatalf("freshness headers: %v", res.Header)
	}

	res = h.do(req{method: "GET", path: "/v1/users/me/stats", token: tokA})
	var stats struct {
		UserID    string  `json:"user_id"`
		Open      int64   `json:"open"`
		Completed int64   `json:"completed"`
		Total     int64   `json:"total"`
		UpdatedAt *string `json:"updated_at"`
	}
	res.json(t, &stats)
	if res.Status != http.StatusOK || stats.UserID != a.ID || stats.Open != 1 || stats.Completed != 3 || stats.Total != 4 || stats.UpdatedAt == nil {
		t.Fatalf("stats: %d %s", res.Status, res.Body)
	}

	// Bad parameters are the client's problem; auth applies as everywhere.
	if res := h.do(req{method: "GET", path: "/v1/leaderboard?limit=0", token: tokB}); res.Status != http.StatusBadRequest {
		t.Fatalf("limit=0: %d %s", res.Status, res.Body)
	}
	if res := h.do(req{method: "GET", path: "/v1/leaderboard"}); res.Status != http.StatusUnauthorized {
		t.Fatalf("no token: %d", res.Status)
	}

	// MongoDB down: a 503 problem telling the client to retry, never a 500.
	if err := rm.ferret.Stop(); err != nil {
		t.Fatal(err)
	}
	res = h.do(req{method: "GET", path: "/v1/users/me/stats", token: tokA})
	if p := res.problem(t); res.Status != http.StatusServiceUnavailable || p.Type != "urn:outboxtodo:problem:read-model-unavailable" || res.Header.Get("Retry-After") == "" {
		t.Fatalf("stats with MongoDB down: %d %s", res.Status, res.Body)
	}
}

func TestHealthSync(t *testing.T) {
	t.Parallel()
	rm := newReadModel(t)
	ns := natsserver.NewTest(t, nil)
	_, js := natsserver.Connect(t, ns.ClientURL())
	ctx := sharedtest.Context(t, 30*time.Second)
	// The projector's durables are one per partition (projector-p<i>); their state is
	// summed and shown one by one, with the replica holding each (its claim in the
	// membership bucket), and other consumers of the stream are not counted.
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{event.StreamSubjects(event.DefaultSubjectPrefix)},
		SubjectTransform: event.PartitionTransform(event.DefaultSubjectPrefix, 2)})
	if err != nil {
		t.Fatal(err)
	}
	for _, cc := range []jetstream.ConsumerConfig{
		{Durable: "projector-p0", FilterSubject: event.PartitionFilter(event.DefaultSubjectPrefix, 0)},
		{Durable: "projector-p1", FilterSubject: event.PartitionFilter(event.DefaultSubjectPrefix, 1)},
		{Durable: "projector-rebuild"},
	} {
		cc.AckPolicy = jetstream.AckExplicitPolicy
		if _, err := stream.CreateOrUpdateConsumer(ctx, cc); err != nil {
			t.Fatal(err)
		}
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "projector-members"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "m.replica-a", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "c.p1", []byte("replica-a")); err != nil {
		t.Fatal(err)
	}

	var reporter *syncstatus.Reporter
	h := newHarness(t, func(o *httpapi.Options) {
		o.SyncReport = func(ctx context.Context) syncstatus.Report { return reporter.Report(ctx) }
	})
	reporter = &syncstatus.Reporter{
		Outbox:     func(ctx context.Context) (outbox.Stats, error) { return outbox.ReadStats(ctx, h.pool) },
		JetStream:  js,
		Stream:     "EVENTS",
		Consumer:   "projector",
		Members:    "projector-members",
		ReadModel:  rm.store,
		Thresholds: syncstatus.Thresholds{BacklogWarn: 3, BacklogCrit: 100, PendingWarn: 2, PendingCrit: 100},
		Timeout:    5 * time.Second,
		Now:        time.Now,
	}
	type report struct {
		Status string `json:"status"`
		Outbox struct {
			Backlog int64 `json:"backlog"`
			Parked  int64 `json:"parked"`
		} `json:"outbox"`
		Stream struct {
			Messages uint64 `json:"messages"`
		} `json:"stream"`
		Consumer struct {
			Pending    uint64 `json:"pending"`
			Partitions []struct {
				Partition  string  `json:"partition"`
				Consumer   string  `json:"consumer"`
				Pending    uint64  `json:"pending"`
				LagSeconds float64 `json:"lag_seconds"`
				Holder     *string `json:"holder"`
			} `json:"partitions"`
		} `json:"consumer"`
		Projection struct {
			LagSeconds float64 `json:"lag_seconds"`
		} `json:"projection"`
		DeadLetters *int64 `json:"dead_letters"`
		Alerts      []struct {
			Severity, Check string
		} `json:"alerts"`
	}
	get := func() (int, report) {
		t.Helper()
		res := h.do(req{method: "GET", path: "/health/sync"})
		var r report
		res.json(t, &r)
		return res.Status, r
	}
	alerts := func(r report) map[string]string {
		m := map[string]string{}
		for _, a := range r.Alerts {
			m[a.Check] = a.Severity
		}
		return m
	}

	// Quiet system: all ok.
	code, r := get()
	if code != http.StatusOK || r.Status != "ok" || r.Outbox.Backlog != 0 || r.DeadLetters == nil || *r.DeadLetters != 0 || len(r.Alerts) != 0 {
		t.Fatalf("quiet system: %d %+v", code, r)
	}

	// Four writes wait in the outbox (nobody publishes here), one of them parked; two
	// events wait in the stream for the projector; one dead letter.
	tok, _ := h.signUp()
	for range 3 {
		h.createTodo(tok, map[string]any{"title": "t"})
	}
	h.exec(`UPDATE outbox SET parked_at = now(), attempts = 10 WHERE event_id = (SELECT event_id FROM outbox ORDER BY created_at LIMIT 1)`)
	owner := uuid.Must(uuid.NewV7())
	busy := event.PartitionOf(owner, 2)
	for i := range 2 {
		if _, err := js.Publish(ctx, "todo.events.todo."+owner.String()+".a"+strconv.Itoa(i), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	rm.put(t, readmodel.CollDeadLetters, readmodel.DeadLetter{ID: "EVENTS:7", Stream: "EVENTS", StreamSeq: 7, Error: "boom", DeadAt: time.Now()})

	code, r = get()
	got := alerts(r)
	if code != http.StatusOK || r.Status != "warning" || r.Outbox.Backlog != 3 || r.Outbox.Parked != 1 ||
		r.Stream.Messages != 2 || r.Consumer.Pending != 2 || r.Projection.LagSeconds <= 0 || *r.DeadLetters != 1 ||
		got["outbox_backlog"] != "warning" || got["outbox_parked"] != "warning" || got["consumer_pending"] != "warning" || got["dead_letters"] != "warning" {
		t.Fatalf("backlog: %d %+v", code, r)
	}
	if ps := r.Consumer.Partitions; len(ps) != 2 || ps[0].Partition != "p0" || ps[0].Consumer != "projector-p0" || ps[1].Partition != "p1" ||
		ps[busy].Pending != 2 || ps[busy].LagSeconds <= 0 || ps[1-busy].Pending != 0 || ps[1-busy].LagSeconds != 0 ||
		ps[0].Holder != nil || ps[1].Holder == nil || *ps[1].Holder != "replica-a" {
		t.Fatalf("partitions: %+v", ps)
	}

	// A source that cannot be read is critical: 503.
	ns.Stop()
	code, r = get()
	if code != http.StatusServiceUnavailable || r.Status != "critical" || alerts(r)["stream"] != "critical" || r.Outbox.Backlog != 3 {
		t.Fatalf("NATS down: %d %+v", code, r)
	}
}
