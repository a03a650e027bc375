// Package workload keeps writes flowing through the API while faults happen, and
// records the outcome of every one of them in a Ledger.
//
// Each writer owns its users, so no two writers touch one aggregate and every recorded
// version is the one the API answered for that aggregate at that moment. Outcomes:
//   - acknowledged: a 2xx answer;
//   - failed: an error answer, or a connection that was never made (nothing was sent);
//   - unknown: the request was sent but no answer came (the API died mid-request), or
//     the API answered 504 outcome-unknown (the database lost its commit's answer).
//
// An aggregate whose last write failed or is unknown is handled so the audit can still
// judge it: after an unknown outcome it is never touched again (its state is
// unknowable); after a failed delete it is kept (and its user never deleted), so the
// audit can check that it still exists.
package workload

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Outcome of one write.
type Outcome int

// Outcomes.
const (
	Acked Outcome = iota
	Failed
	Unknown
)

// Kind of write.
type Kind string

// Kinds of writes.
const (
	SignUp     Kind = "sign_up"
	CreateTodo Kind = "create_todo"
	PatchTodo  Kind = "patch_todo"
	DeleteTodo Kind = "delete_todo"
	DeleteUser Kind = "delete_user"
)

// Write is one recorded write.
type Write struct {
	Kind    Kind
	Outcome Outcome
	// Aggregate is the user or todo written; zero for a create that was not acked.
	Aggregate uuid.UUID
	// User owns the aggregate.
	User uuid.UUID
	// Version is the version the API answered (acked writes only).
	Version int64
	// Marker is a unique string the write put into the aggregate (email or title), so
	// that a failed write can be looked for; empty for deletes.
	Marker string
	// Detail says why a write failed or is unknown.
	Detail string
}

// Ledger holds every write; safe for concurrent use.
type Ledger struct {
	mu     sync.Mutex
	writes []Write
}

func (l *Ledger) add(w Write) {
	l.mu.Lock()
	l.writes = append(l.writes, w)
	l.mu.Unlock()
}

// Writes returns a copy of the writes so far.
func (l *Ledger) Writes() []Write {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Write(nil), l.writes...)
}

// Counts returns how many writes had each outcome.
func (l *Ledger) Counts() (acked, failed, unknown int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.writes {
		switch w.Outcome {
		case Acked:
			acked++
		case Failed:
			failed++
		case Unknown:
			unknown++
		}
	}
	return acked, failed, unknown
}

// Config shapes the load.
type Config struct {
	APIURL  string
	Writers int
	// UsersPerWriter is how many live users each writer keeps.
	UsersPerWriter int
	// Pause is the wait between two writes of one writer.
	Pause time.Duration
	// MaxPatches bounds the updates of one todo: the stream keeps a bounded number of
	// messages per subject (one subject per aggregate), and the audit counts them all.
	MaxPatches int
}

// Run runs cfg.Writers writers until ctx ends, recording into l.
func Run(ctx context.Context, cfg Config, l *Ledger) {
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for i := range cfg.Writers {
		w := &writer{cfg: cfg, client: client, ledger: l, rng: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))}
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
}

type user struct {
	id     uuid.UUID
	token  string
	todos  []*todo
	pinned bool // a write of it or its todos failed: never delete it
}

type todo struct {
	id      uuid.UUID
	patches int
	pinned  bool // a delete failed: keep it so the audit can find it
}

type writer struct {
	cfg    Config
	client *http.Client
	ledger *Ledger
	rng    *rand.Rand
	users  []*user
}

func (w *writer) run(ctx context.Context) {
	for ctx.Err() == nil {
		// Not ctx: a write in flight when the load stops gets its answer, so the end of
		// the run adds no unknown outcomes. The client's timeout bounds it.
		w.step(context.WithoutCancel(ctx))
		t := time.NewTimer(w.cfg.Pause)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

func (w *writer) step(ctx context.Context) {
	if len(w.users) < w.cfg.UsersPerWriter {
		w.signUp(ctx)
		return
	}
	u := w.users[w.rng.IntN(len(w.users))]
	var live []*todo
	for _, t := range u.todos {
		if !t.pinned && t.patches < w.cfg.MaxPatches {
			live = append(live, t)
		}
	}
	switch r := w.rng.IntN(100); {
	case r < 3 && !u.pinned:
		w.deleteUser(ctx, u)
	case r < 45 || len(live) == 0:
		w.createTodo(ctx, u)
	case r < 85:
		w.patchTodo(ctx, u, live[w.rng.IntN(len(live))])
	default:
		w.deleteTodo(ctx, u, live[w.rng.IntN(len(live))])
	}
}

func (w *writer) signUp(ctx context.Context) {
	email := "chaos-" + marker() + "@example.com"
	body := map[string]any{"email": email, "display_name": "chaos " + email[6:14]}
	var out struct {
		User struct {
			ID      uuid.UUID `json:"id"`
			Version int64     `json:"version"`
		} `json:"user"`
		Token string `json:"token"`
	}
	rec := Write{Kind: SignUp, Marker: email}
	rec.Outcome, rec.Detail = w.do(ctx, http.MethodPost, "/v1/users", "", body, &out, nil)
	if rec.Outcome == Acked {
		rec.Aggregate, rec.User, rec.Version = out.User.ID, out.User.ID, out.User.Version
		w.users = append(w.users, &user{id: out.User.ID, token: out.Token})
	}
	w.ledger.add(rec)
}

func (w *writer) createTodo(ctx context.Context, u *user) {
	title := "chaos " + marker()
	body := map[string]any{"title": title, "priority": []string{"low", "normal", "high"}[w.rng.IntN(3)]}
	var out struct {
		ID      uuid.UUID `json:"id"`
		Version int64     `json:"version"`
	}
	rec := Write{Kind: CreateTodo, User: u.id, Marker: title}
	rec.Outcome, rec.Detail = w.do(ctx, http.MethodPost, "/v1/todos", u.token, body, &out, nil)
	switch rec.Outcome {
	case Acked:
		rec.Aggregate, rec.Version = out.ID, out.Version
		u.todos = append(u.todos, &todo{id: out.ID})
	case Unknown:
		// A todo may exist that this writer does not know; deleting the user would
		// delete it too, which is fine, but keep the user so its state stays checkable.
		u.pinned = true
	}
	w.ledger.add(rec)
}

func (w *writer) patchTodo(ctx context.Context, u *user, t *todo) {
	title := "chaos " + marker()
	body := map[string]any{"title": title, "completed": w.rng.IntN(3) > 0}
	var out struct {
		Version int64 `json:"version"`
	}
	rec := Write{Kind: PatchTodo, User: u.id, Aggregate: t.id, Marker: title}
	rec.Outcome, rec.Detail = w.do(ctx, http.MethodPatch, "/v1/todos/"+t.id.String(), u.token, body, &out, nil)
	t.patches++
	switch rec.Outcome {
	case Acked:
		rec.Version = out.Version
	case Unknown:
		w.forget(u, t)
	}
	w.ledger.add(rec)
}

func (w *writer) deleteTodo(ctx context.Context, u *user, t *todo) {
	rec := Write{Kind: DeleteTodo, User: u.id, Aggregate: t.id}
	var etag string
	rec.Outcome, rec.Detail = w.do(ctx, http.MethodDelete, "/v1/todos/"+t.id.String(), u.token, nil, nil, &etag)
	switch rec.Outcome {
	case Acked:
		rec.Version, _ = strconv.ParseInt(strings.Trim(etag, `"`), 10, 64)
		w.forget(u, t)
	case Failed:
		t.pinned, u.pinned = true, true
	case Unknown:
		w.forget(u, t)
		u.pinned = true
	}
	w.ledger.add(rec)
}

func (w *writer) deleteUser(ctx context.Context, u *user) {
	rec := Write{Kind: DeleteUser, User: u.id, Aggregate: u.id}
	rec.Outcome, rec.Detail = w.do(ctx, http.MethodDelete, "/v1/users/me", u.token, nil, nil, nil)
	switch rec.Outcome {
	case Acked, Unknown:
		w.users = removeUser(w.users, u)
	case Failed:
		u.pinned = true
	}
	w.ledger.add(rec)
}

// forget drops t from the writer's todos: it is deleted or its state is unknowable.
func (w *writer) forget(u *user, t *todo) {
	for i, x := range u.todos {
		if x == t {
			u.todos = append(u.todos[:i], u.todos[i+1:]...)
			return
		}
	}
}

func removeUser(us []*user, u *user) []*user {
	for i, x := range us {
		if x == u {
			return append(us[:i], us[i+1:]...)
		}
	}
	return us
}

// do sends one request and classifies its outcome; out receives a 2xx JSON body, etag
// the ETag header.
func (w *writer) do(ctx context.Context, method, path, token string, body, out any, etag *string) (Outcome, string) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return Failed, "encode: " + err.Error()
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.cfg.APIURL+path, rd)
	if err != nil {
		return Failed, "request: " + err.Error()
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		if neverSent(err) {
			return Failed, err.Error()
		}
		return Unknown, err.Error()
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusGatewayTimeout {
		// The API's "outcome-unknown": the commit's answer was lost and could not be
		// resolved; the write may exist.
		return Unknown, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Failed, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(data))
	}
	if err != nil {
		// The answer said 2xx: the write is committed even if the body was cut.
		return Acked, "body: " + err.Error()
	}
	if etag != nil {
		*etag = resp.Header.Get("ETag")
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return Acked, "decode: " + err.Error()
		}
	}
	return Acked, ""
}

// neverSent reports whether err means the request never reached the API (no
// connection was made), so nothing can have been written.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func marker() string {
	b := make([]byte, 8)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}
