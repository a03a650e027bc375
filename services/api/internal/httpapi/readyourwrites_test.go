package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// slowProjector stands in for services/projector, which the API's module may not
// import: it drains the test database's outbox into the read model's users and
// user_stats documents, newest version wins, as the projector does for what the
// stats and leaderboard read, with a delay per event so that it lags behind the
// writes as a loaded projector would. pause holds it between batches.
type slowProjector struct {
	pool  *pgxpool.Pool
	db    *mongo.Database
	delay time.Duration

	mu       sync.Mutex // held while a batch is applied, and by pause
	versions map[string]int64
}

func (p *slowProjector) pause()  { p.mu.Lock() }
func (p *slowProjector) resume() { p.mu.Unlock() }

// start runs the projector until the test ends.
func (p *slowProjector) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := p.batch(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("slow projector: %v", err)
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func (p *slowProjector) batch(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	rows, err := p.pool.Query(ctx, `SELECT event_id, payload FROM outbox ORDER BY created_at, aggregate_version LIMIT 50`)
	if err != nil {
		return err
	}
	type row struct {
		id      [16]byte
		payload []byte
	}
	batch, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.payload)
	})
	if err != nil {
		return err
	}
	if len(batch) == 0 {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
		return nil
	}
	ids := make([][16]byte, 0, len(batch))
	for _, r := range batch {
		e, err := event.Decode(r.payload)
		if err != nil {
			return err
		}
		if err := p.apply(ctx, e); err != nil {
			return err
		}
		ids = append(ids, r.id)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(p.delay):
		}
	}
	_, err = p.pool.Exec(ctx, `DELETE FROM outbox WHERE event_id = ANY($1)`, ids)
	return err
}

func (p *slowProjector) apply(ctx context.Context, e event.Envelope) error {
	owner := e.OwnerID.String()
	if e.AggregateType == "user" && p.newer("user:"+owner, e.Version) {
		doc := readmodel.User{ID: owner, Version: e.Version, Deleted: e.Type == event.UserDeleted}
		if !doc.Deleted {
			u, err := e.User()
			if err != nil {
				return err
			}
			doc.Email, doc.DisplayName, doc.CreatedAt, doc.UpdatedAt = u.Email, u.DisplayName, u.CreatedAt, u.UpdatedAt
		}
		if err := p.replace(ctx, readmodel.CollUsers, owner, doc); err != nil {
			return err
		}
	}
	if e.Stats != nil && p.newer("stats:"+owner, e.Stats.Version) {
		return p.replace(ctx, readmodel.CollStats, owner, readmodel.StatsOf(owner, *e.Stats, e.OccurredAt))
	}
	return nil
}

func (p *slowProjector) newer(key string, v int64) bool {
	if p.versions[key] >= v {
		return false
	}
	p.versions[key] = v
	return true
}

func (p *slowProjector) replace(ctx context.Context, coll, id string, doc any) error {
	_, err := p.db.Collection(coll).ReplaceOne(ctx, bson.D{{Key: "_id", Value: id}}, doc, options.Replace().SetUpsert(true))
	return err
}

type statsBody struct {
	Completed int64 `json:"completed"`
	Total     int64 `json:"total"`
}

type leaderboardBody struct {
	Me *struct {
		DisplayName string `json:"display_name"`
		Completed   int64  `json:"completed"`
	} `json:"me"`
}

// TestReadYourWrites completes todos under a loaded, lagging projector and reads the
// stats and the leaderboard with each write's Consistency-Token: every answer either
// includes the write and says fresh, or says stale. With the projector paused the
// answer is stale; once it resumes, the same read becomes fresh.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	rm := newReadModel(t)
	h := newHarness(t, withReadModel(rm.store), func(o *httpapi.Options) {
		o.ReadYourWritesWait = 500 * time.Millisecond
		o.LeaderboardCacheTTL = time.Second // a cached ranking must not be passed off as fresh
	})
	proj := &slowProjector{pool: h.pool, db: rm.db, delay: 2 * time.Millisecond, versions: map[string]int64{}}
	proj.start(t)

	// Load: other users write all along, so that the projector lags.
	ctx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	for range 2 {
		token, _ := h.signUp()
		load.Add(1)
		go func() {
			defer load.Done()
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				if err := postTodo(ctx, h, token, rand.IntN(2) == 0); err != nil && ctx.Err() == nil {
					t.Errorf("load: %v", err)
					return
				}
			}
		}()
	}
	defer func() { stopLoad(); load.Wait() }()

	token, me := h.signUp()
	read := func(path, consistencyToken string, asQuery bool) (response, string) {
		t.Helper()
		r := req{method: "GET", path: path, token: token}
		if asQuery {
			r.path += "?consistency_token=" + consistencyToken
		} else {
			r.header = map[string]string{"Consistency-Token": consistencyToken}
		}
		res := h.do(r)
		if res.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", path, res.Status, res.Body)
		}
		state := res.Header.Get("Consistency")
		if state != "fresh" && state != "stale" {
			t.Fatalf("%s: Consistency %q", path, state)
		}
		return res, state
	}
	fresh := 0
	check := func(round int, consistencyToken string, completed int64, name string) {
		t.Helper()
		res, state := read("/v1/users/me/stats", consistencyToken, round%2 == 0)
		var st statsBody
		res.json(t, &st)
		if state == "fresh" {
			fresh++
			if st.Completed != completed {
				t.Fatalf("round %d: stats say fresh with %d completed, want %d", round, st.Completed, completed)
			}
		}
		res, state = read("/v1/leaderboard", consistencyToken, round%2 == 1)
		var lb leaderboardBody
		res.json(t, &lb)
		if state == "fresh" && (lb.Me == nil || lb.Me.Completed != completed || lb.Me.DisplayName != name) {
			t.Fatalf("round %d: leaderboard says fresh with me %+v, want %d completed by %q", round, lb.Me, completed, name)
		}
	}

	name := "U"
	for round := range 8 {
		td := h.createTodo(token, map[string]string{"title": fmt.Sprint("todo ", round)})
		res := h.do(req{method: "PATCH", path: "/v1/todos/" + td.ID, token: token, body: map[string]bool{"completed": true}})
		if res.Status != http.StatusOK {
			t.Fatalf("complete: %d %s", res.Status, res.Body)
		}
		check(round, res.Header.Get("Consistency-Token"), int64(round+1), name)
		if round == 4 {
			// A write of the user: its token names the user's version.
			name = "Renamed"
			res := h.do(req{method: "PATCH", path: "/v1/users/me", token: token, body: map[string]string{"display_name": name}})
			check(round, res.Header.Get("Consistency-Token"), int64(round+1), name)
		}
	}
	stopLoad()
	load.Wait()

	// Paused: the write cannot be in the read model, so the answer is stale.
	proj.pause()
	res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: map[string]any{"title": "paused", "completed": true}})
	written := res.Header.Get("Consistency-Token")
	if res.Status != http.StatusCreated || written == "" {
		t.Fatalf("create while paused: %d %v", res.Status, res.Header)
	}
	for _, path := range []string{"/v1/users/me/stats", "/v1/leaderboard"} {
		if _, state := read(path, written, false); state != "stale" {
			t.Fatalf("%s while the projector is paused: %s", path, state)
		}
	}
	proj.resume()
	for {
		res, state := read("/v1/users/me/stats", written, false)
		if state == "fresh" {
			var st statsBody
			res.json(t, &st)
			if st.Completed != 9 || st.Total != 9 {
				t.Fatalf("fresh after the pause: %s", res.Body)
			}
			break
		}
	}
	t.Logf("%d of the loaded rounds' stats reads were fresh; user %s", fresh, me.ID)

	// A token that is not one of the caller's writes is refused, never waited on.
	other, _ := h.signUp()
	for _, tok := range []string{"garbage", written} {
		res := h.do(req{method: "GET", path: "/v1/users/me/stats", token: other, header: map[string]string{"Consistency-Token": tok}})
		if res.Status != http.StatusBadRequest || res.problem(t).Type != problem.TypeURI("invalid-header") {
			t.Fatalf("token %q of another user: %d %s", tok, res.Status, res.Body)
		}
	}
}

// postTodo creates a todo outside the harness, for goroutines that may not fail the
// test by Fatal.
func postTodo(ctx context.Context, h *harness, token string, completed bool) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"title":"load","completed":%t}`, completed)
	r, err := http.NewRequestWithContext(rctx, "POST", h.srv.URL+"/v1/todos", strings.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+token)
	res, err := h.srv.Client().Do(r)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusCreated {
		return errors.New(res.Status)
	}
	return nil
}
