package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// outboxRow is one outbox row, decoded.
type outboxRow struct {
	Type      string
	Version   int64
	Owner     string
	Partition int32
	Event     event.Envelope
}

func (h *harness) outbox(aggregateID string) []outboxRow {
	h.t.Helper()
	ctx := sharedtest.Context(h.t, 10*time.Second)
	rows, err := h.pool.Query(ctx, `SELECT event_type, aggregate_version, partition_key::text, partition, payload::text
FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_version`, aggregateID)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var payload string
		if err := rows.Scan(&r.Type, &r.Version, &r.Owner, &r.Partition, &payload); err != nil {
			h.t.Fatal(err)
		}
		if r.Event, err = event.Decode([]byte(payload)); err != nil {
			h.t.Fatalf("outbox payload: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// assertOneEvent checks that the aggregate has exactly one outbox row at version,
// of type typ, owned by owner, whose data equals the state the client received.
func (h *harness) assertOneEvent(aggregateID, typ, owner string, version int64, clientState []byte) {
	h.t.Helper()
	var found []outboxRow
	for _, r := range h.outbox(aggregateID) {
		if r.Version == version {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		h.t.Fatalf("%d outbox rows for %s at version %d, want 1", len(found), aggregateID, version)
	}
	r := found[0]
	if r.Type != typ || r.Owner != owner || r.Event.OwnerID.String() != owner || r.Event.Version != version {
		h.t.Fatalf("outbox row %+v, want type %s owner %s version %d", r, typ, owner, version)
	}
	if clientState != nil && !jsonEqual(h.t, r.Event.Data, clientState) {
		h.t.Fatalf("event data %s\nclient saw %s", r.Event.Data, clientState)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func TestWritesHaveExactlyOneMatchingEvent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	res := h.do(req{method: "POST", path: "/v1/users", body: map[string]string{"email": "  Ada@Example.COM ", "display_name": " Ada "}})
	if res.Status != http.StatusCreated || res.Header.Get("Location") != "/v1/users/me" {
		t.Fatalf("sign-up: %d %v %s", res.Status, res.Header, res.Body)
	}
	var su struct {
		User  json.RawMessage `json:"user"`
		Token string          `json:"token"`
	}
	res.json(t, &su)
	var u user
	if err := json.Unmarshal(su.User, &u); err != nil {
		t.Fatal(err)
	}
	if u.Email != "ada@example.com" || u.DisplayName != "Ada" || u.Version != 1 || !strings.HasPrefix(su.Token, "tdo_") {
		t.Fatalf("sign-up answered %s", res.Body)
	}
	h.assertOneEvent(u.ID, event.UserCreated, u.ID, 1, su.User)
	if n := h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1 AND token_hash = sha256($2::bytea)`, u.ID, []byte(su.Token)); n != 1 ||
		h.count(`SELECT count(*) FROM api_tokens`) != 1 {
		t.Fatal("want exactly the token's SHA-256 stored")
	}

	res = h.do(req{method: "PATCH", path: "/v1/users/me", token: su.Token, body: map[string]string{"display_name": "Ada L."}})
	if res.Status != http.StatusOK {
		t.Fatalf("patch me: %d %s", res.Status, res.Body)
	}
	h.assertOneEvent(u.ID, event.UserUpdated, u.ID, 2, res.Body)

	due := "2030-01-02T03:04:05.123456789+02:00"
	res = h.do(req{method: "POST", path: "/v1/todos", token: su.Token, body: map[string]any{"title": "buy milk", "notes": "2 l", "due": due, "priority": "high"}})
	if res.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", res.Status, res.Body)
	}
	var td todo
	res.json(t, &td)
	if res.Header.Get("ETag") != `"1"` || res.Header.Get("Location") != "/v1/todos/"+td.ID || td.Version != 1 {
		t.Fatalf("create answered %v %s", res.Header, res.Body)
	}
	if td.Due == nil || *td.Due != "2030-01-02T01:04:05.123456Z" {
		t.Fatalf("due %v, want UTC at microseconds", td.Due)
	}
	h.assertOneEvent(td.ID, event.TodoCreated, u.ID, 1, res.Body)
	if got := h.outbox(td.ID)[0]; got.Partition != outbox.PartitionOf(got.Event.OwnerID) {
		t.Fatalf("partition %d", got.Partition)
	}

	get := h.do(req{method: "GET", path: "/v1/todos/" + td.ID, token: su.Token})
	if get.Status != http.StatusOK || !jsonEqual(t, get.Body, res.Body) || get.Header.Get("ETag") != `"1"` {
		t.Fatalf("get answered %d %s, created %s", get.Status, get.Body, res.Body)
	}

	res = h.do(req{method: "PATCH", path: "/v1/todos/" + td.ID, token: su.Token, body: map[string]any{"completed": true, "notes": nil}})
	res.json(t, &td)
	if res.Status != http.StatusOK || td.Version != 2 || !td.Completed || td.CompletedAt == nil || td.Notes != nil || res.Header.Get("ETag") != `"2"` {
		t.Fatalf("complete: %d %s", res.Status, res.Body)
	}
	h.assertOneEvent(td.ID, event.TodoUpdated, u.ID, 2, res.Body)

	res = h.do(req{method: "PATCH", path: "/v1/todos/" + td.ID, token: su.Token, body: map[string]any{"completed": false, "due": nil},
		header: map[string]string{"Content-Type": "application/merge-patch+json", "If-Match": `"2"`}})
	res.json(t, &td)
	if res.Status != http.StatusOK || td.Version != 3 || td.Completed || td.CompletedAt != nil || td.Due != nil || td.Title != "buy milk" {
		t.Fatalf("reopen: %d %s", res.Status, res.Body)
	}
	h.assertOneEvent(td.ID, event.TodoUpdated, u.ID, 3, res.Body)

	res = h.do(req{method: "DELETE", path: "/v1/todos/" + td.ID, token: su.Token, header: map[string]string{"If-Match": `"3"`}})
	if res.Status != http.StatusNoContent || res.Header.Get("ETag") != `"4"` {
		t.Fatalf("delete: %d %v %s", res.Status, res.Header, res.Body)
	}
	h.assertOneEvent(td.ID, event.TodoDeleted, u.ID, 4, nil)
	ts, err := h.outbox(td.ID)[3].Event.Tombstone()
	if err != nil || ts.Version != 4 || ts.OwnerID.String() != u.ID {
		t.Fatalf("tombstone %+v: %v", ts, err)
	}
	if h.count(`SELECT count(*) FROM todos`) != 0 {
		t.Fatal("todo still there")
	}
	if res := h.do(req{method: "GET", path: "/v1/todos/" + td.ID, token: su.Token}); res.Status != http.StatusNotFound {
		t.Fatalf("get deleted: %d", res.Status)
	}
}

// TestAtomicity makes the outbox insert fail after the row write, through a CHECK
// constraint added in the test's own database, and checks that the write left
// nothing behind: no row change and no outbox row.
func TestAtomicity(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	kept := h.createTodo(token, map[string]string{"title": "kept"})
	block := func(eventType string) {
		h.exec(`ALTER TABLE outbox DROP CONSTRAINT IF EXISTS inject_failure`)
		h.exec(fmt.Sprintf(`ALTER TABLE outbox ADD CONSTRAINT inject_failure CHECK (event_type <> '%s') NOT VALID`, eventType))
	}
	state := func() string {
		var s string
		ctx := sharedtest.Context(t, 5*time.Second)
		err := h.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM users)::text || '/' || (SELECT count(*) FROM todos)::text || '/' ||
			(SELECT count(*) FROM outbox)::text || '/' || (SELECT count(*) FROM api_tokens)::text || '/' ||
			(SELECT count(*) FROM idempotency_keys)::text || '/' ||
			(SELECT coalesce(string_agg(title || ':' || version::text, ','), '') FROM todos) || '/' ||
			(SELECT string_agg(display_name || ':' || version::text, ',') FROM users)`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		event string
		req   req
	}{
		{event.UserCreated, req{method: "POST", path: "/v1/users", body: map[string]string{"email": "new@example.com", "display_name": "N"}, header: map[string]string{"Idempotency-Key": "k1"}}},
		{event.UserUpdated, req{method: "PATCH", path: "/v1/users/me", token: token, body: map[string]string{"display_name": "changed"}}},
		{event.UserDeleted, req{method: "DELETE", path: "/v1/users/me", token: token}},
		{event.TodoCreated, req{method: "POST", path: "/v1/todos", token: token, body: map[string]string{"title": "lost"}, header: map[string]string{"Idempotency-Key": "k2"}}},
		{event.TodoUpdated, req{method: "PATCH", path: "/v1/todos/" + kept.ID, token: token, body: map[string]string{"title": "changed"}}},
		{event.TodoDeleted, req{method: "DELETE", path: "/v1/todos/" + kept.ID, token: token}},
	}
	for _, c := range cases {
		before := state()
		block(c.event)
		res := h.do(c.req)
		p := res.problem(t)
		if res.Status != http.StatusInternalServerError || p.Type != problem.TypeURI("internal") || strings.Contains(string(res.Body), "inject_failure") {
			t.Fatalf("%s: %d %s, want a 500 problem hiding the cause", c.event, res.Status, res.Body)
		}
		if after := state(); after != before {
			t.Fatalf("%s left a partial write: before %s, after %s", c.event, before, after)
		}
	}
}

func TestConcurrentPatchesWithoutIfMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	td := h.createTodo(token, map[string]string{"title": "t"})
	const n = 100
	versions := make([]int64, n)
	for i, res := range h.patchAtOnce(token, td.ID, n, nil) {
		if res.Status != http.StatusOK {
			t.Errorf("patch %d: %d %s", i, res.Status, res.Body)
			continue
		}
		var got todo
		res.json(t, &got)
		versions[i] = got.Version
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("versions %v, want 2..%d without gaps", versions, n+1)
		}
	}
	rows := h.outbox(td.ID)
	if len(rows) != n+1 {
		t.Fatalf("%d outbox rows, want %d", len(rows), n+1)
	}
	for i, r := range rows {
		if r.Version != int64(i+1) {
			t.Fatalf("outbox row %d has version %d", i, r.Version)
		}
	}
}

func TestConcurrentPatchesWithSameIfMatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	td := h.createTodo(token, map[string]string{"title": "t"})
	ok := 0
	for _, res := range h.patchAtOnce(token, td.ID, 20, map[string]string{"If-Match": `"1"`}) {
		if res.Status == http.StatusPreconditionFailed && res.problem(t).Type != problem.TypeURI("precondition-failed") {
			t.Errorf("412 with type %s", res.problem(t).Type)
		}
		switch res.Status {
		case http.StatusOK:
			ok++
		case http.StatusPreconditionFailed:
		default:
			t.Fatalf("status %d", res.Status)
		}
	}
	if ok != 1 || len(h.outbox(td.ID)) != 2 {
		t.Fatalf("%d winners and %d outbox rows, want 1 and 2", ok, len(h.outbox(td.ID)))
	}
}

// patchAtOnce sends n PATCHes of todo id at once, the i-th retitling it t<i> with
// header, and returns their answers in that order.
func (h *harness) patchAtOnce(token, id string, n int, header map[string]string) []response {
	out := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out[i] = h.do(req{method: "PATCH", path: "/v1/todos/" + id, token: token, body: map[string]string{"title": fmt.Sprintf("t%d", i)}, header: header})
		})
	}
	wg.Wait()
	return out
}

func TestAuthIsolation(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	alice, _ := h.signUp()
	bob, _ := h.signUp()
	aliceTodo := h.createTodo(alice, map[string]string{"title": "alice's"})
	h.createTodo(bob, map[string]string{"title": "bob's"})
	missing := "0190a8a4-3c6e-7b2e-9a6e-3f0c2d1e4b5a"

	routes := []req{
		{method: "GET", path: "/v1/users/me"},
		{method: "PATCH", path: "/v1/users/me", body: map[string]string{"display_name": "x"}},
		{method: "DELETE", path: "/v1/users/me"},
		{method: "POST", path: "/v1/todos", body: map[string]string{"title": "x"}},
		{method: "GET", path: "/v1/todos"},
		{method: "GET", path: "/v1/todos/" + aliceTodo.ID},
		{method: "PATCH", path: "/v1/todos/" + aliceTodo.ID, body: map[string]string{"title": "x"}},
		{method: "DELETE", path: "/v1/todos/" + aliceTodo.ID},
		{method: "POST", path: "/v1/users/me/tokens"},
		{method: "DELETE", path: "/v1/users/me/tokens/current"},
	}
	badTokens := map[string]string{
		"missing":   "",
		"malformed": "not-a-token",
		"unknown":   "tdo_" + strings.Repeat("A", 43),
	}
	for _, r := range routes {
		for name, tok := range badTokens {
			r.token = tok
			res := h.do(r)
			p := res.problem(t)
			if res.Status != http.StatusUnauthorized || p.Type != problem.TypeURI("unauthorized") ||
				!strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s %s with %s token: %d %v %s", r.method, r.path, name, res.Status, res.Header, res.Body)
			}
		}
	}
	// A basic-auth header is not a bearer token.
	res := h.do(req{method: "GET", path: "/v1/users/me", header: map[string]string{"Authorization": "Basic YTpi"}})
	if res.Status != http.StatusUnauthorized {
		t.Fatalf("basic auth: %d", res.Status)
	}

	// Bob sees Alice's todo exactly as a missing one.
	for _, method := range []string{"GET", "PATCH", "DELETE"} {
		var body any
		if method == "PATCH" {
			body = map[string]string{"title": "mine now"}
		}
		other := h.do(req{method: method, path: "/v1/todos/" + aliceTodo.ID, token: bob, body: body})
		none := h.do(req{method: method, path: "/v1/todos/" + missing, token: bob, body: body})
		po, pn := other.problem(t), none.problem(t)
		if other.Status != http.StatusNotFound || none.Status != http.StatusNotFound ||
			po.Type != pn.Type || po.Title != pn.Title || po.Detail != pn.Detail || len(other.Body)-len(aliceTodo.ID) != len(none.Body)-len(missing) {
			t.Fatalf("%s: other's todo %s, missing %s", method, other.Body, none.Body)
		}
	}
	var page struct{ Items []todo }
	h.do(req{method: "GET", path: "/v1/todos", token: bob}).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Title != "bob's" {
		t.Fatalf("bob's list %+v", page.Items)
	}
	got := h.do(req{method: "GET", path: "/v1/todos/" + aliceTodo.ID, token: alice})
	var still todo
	got.json(t, &still)
	if still.Version != 1 || still.Title != "alice's" {
		t.Fatalf("alice's todo changed: %s", got.Body)
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	key := map[string]string{"Idempotency-Key": "create-1"}
	first := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"once"}`, header: key})
	second := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"once"}`, header: key})
	if first.Status != http.StatusCreated || second.Status != http.StatusCreated || string(first.Body) != string(second.Body) ||
		first.Header.Get("Location") != second.Header.Get("Location") || first.Header.Get("ETag") != second.Header.Get("ETag") ||
		second.Header.Get("Idempotent-Replayed") != "true" || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("replay:\n%d %v %s\n%d %v %s", first.Status, first.Header, first.Body, second.Status, second.Header, second.Body)
	}
	if n := h.count(`SELECT count(*) FROM todos`); n != 1 {
		t.Fatalf("%d todos", n)
	}
	reused := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"other"}`, header: key})
	if reused.Status != http.StatusUnprocessableEntity || reused.problem(t).Type != problem.TypeURI("idempotency-key-reused") {
		t.Fatalf("reused key: %d %s", reused.Status, reused.Body)
	}
	// Keys are scoped by user: another user's identical key is a new request.
	other, _ := h.signUp()
	if res := h.do(req{method: "POST", path: "/v1/todos", token: other, body: `{"title":"once"}`, header: key}); res.Status != http.StatusCreated || res.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("other user's key: %d %v", res.Status, res.Header)
	}

	// Concurrent duplicates create one todo and all answer the same.
	const n = 10
	bodies := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"race"}`, header: map[string]string{"Idempotency-Key": "race"}})
			if res.Status != http.StatusCreated {
				t.Errorf("concurrent duplicate: %d %s", res.Status, res.Body)
			}
			bodies[i] = string(res.Body)
		})
	}
	wg.Wait()
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("concurrent duplicates answered differently:\n%s\n%s", b, bodies[0])
		}
	}
	if c := h.count(`SELECT count(*) FROM todos WHERE title = 'race'`); c != 1 {
		t.Fatalf("%d todos from concurrent duplicates", c)
	}
	if c := h.count(`SELECT count(*) FROM outbox WHERE event_type = 'todo.created'`); c != 3 {
		t.Fatalf("%d todo.created events, want 3", c)
	}

	// Sign-up replays the user without the token, which is never stored.
	su := map[string]string{"Idempotency-Key": "signup-1"}
	body := `{"email":"idem@example.com","display_name":"I"}`
	a := h.do(req{method: "POST", path: "/v1/users", body: body, header: su})
	b := h.do(req{method: "POST", path: "/v1/users", body: body, header: su})
	var ra, rb struct {
		User  json.RawMessage `json:"user"`
		Token *string         `json:"token"`
	}
	a.json(t, &ra)
	b.json(t, &rb)
	if a.Status != http.StatusCreated || b.Status != http.StatusCreated || ra.Token == nil || rb.Token != nil ||
		!jsonEqual(t, ra.User, rb.User) || b.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("sign-up replay:\n%d %s\n%d %s", a.Status, a.Body, b.Status, b.Body)
	}
	if c := h.count(`SELECT count(*) FROM idempotency_keys WHERE position($1 in convert_from(response_body, 'UTF8')) > 0`, *ra.Token); c != 0 {
		t.Fatal("the token was stored")
	}

	// An expired key is ignored and then replaced.
	h.exec(`UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE idem_key = 'create-1'`)
	again := h.do(req{method: "POST", path: "/v1/todos", token: token, body: `{"title":"twice"}`, header: key})
	if again.Status != http.StatusCreated || again.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("expired key: %d %v %s", again.Status, again.Header, again.Body)
	}
}

func TestDeleteUserEmitsEveryTombstoneInOneTransaction(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, u := h.signUp()
	other, _ := h.signUp()
	var ids []string
	for i := range 5 {
		td := h.createTodo(token, map[string]string{"title": fmt.Sprint(i)})
		ids = append(ids, td.ID)
	}
	h.do(req{method: "PATCH", path: "/v1/todos/" + ids[0], token: token, body: map[string]bool{"completed": true}})
	h.createTodo(other, map[string]string{"title": "stays"})

	if res := h.do(req{method: "DELETE", path: "/v1/users/me", token: token}); res.Status != http.StatusNoContent {
		t.Fatalf("delete me: %d %s", res.Status, res.Body)
	}
	for i, id := range ids {
		want := int64(2)
		if i == 0 {
			want = 3
		}
		h.assertOneEvent(id, event.TodoDeleted, u.ID, want, nil)
	}
	h.assertOneEvent(u.ID, event.UserDeleted, u.ID, 2, nil)
	// One transaction: all the tombstones and the user's share one occurred_at, and
	// the rows are gone together.
	if c := h.count(`SELECT count(DISTINCT created_at) FROM outbox WHERE partition_key = $1 AND event_type LIKE '%.deleted'`, u.ID); c != 1 {
		t.Fatalf("tombstones written at %d different times", c)
	}
	if c := h.count(`SELECT count(*) FROM todos WHERE user_id = $1`, u.ID) + h.count(`SELECT count(*) FROM users WHERE id = $1`, u.ID) +
		h.count(`SELECT count(*) FROM api_tokens WHERE user_id = $1`, u.ID); c != 0 {
		t.Fatalf("%d rows of the deleted user remain", c)
	}
	if c := h.count(`SELECT count(*) FROM todos`); c != 1 {
		t.Fatalf("other users' todos went too: %d left", c)
	}
	if res := h.do(req{method: "GET", path: "/v1/users/me", token: token}); res.Status != http.StatusUnauthorized {
		t.Fatalf("deleted user's token: %d", res.Status)
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	token, _ := h.signUp()
	other, _ := h.signUp()
	h.createTodo(other, map[string]string{"title": "not mine"})
	const n = 23
	want := map[string]bool{}
	for i := range n {
		body := map[string]any{"title": fmt.Sprint(i), "completed": i%3 == 0}
		if i%2 == 0 {
			body["due"] = time.Date(2030, 1, 1+i, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
		}
		want[h.createTodo(token, body).ID] = true
	}
	walk := func(query string) []todo {
		var all []todo
		path := "/v1/todos?limit=5" + query
		for pages := 0; ; pages++ {
			if pages > n {
				t.Fatal("pagination does not end")
			}
			res := h.do(req{method: "GET", path: path, token: token})
			if res.Status != http.StatusOK {
				t.Fatalf("%s: %d %s", path, res.Status, res.Body)
			}
			var page struct {
				Items      []todo  `json:"items"`
				NextCursor *string `json:"next_cursor"`
			}
			res.json(t, &page)
			all = append(all, page.Items...)
			if page.NextCursor == nil {
				return all
			}
			path = "/v1/todos?limit=5" + query + "&cursor=" + *page.NextCursor
		}
	}
	all := walk("")
	if len(all) != n {
		t.Fatalf("walked %d todos, want %d", len(all), n)
	}
	seen := map[string]bool{}
	for i, td := range all {
		if !want[td.ID] || seen[td.ID] {
			t.Fatalf("todo %s unexpected or seen twice", td.ID)
		}
		seen[td.ID] = true
		if i > 0 && all[i-1].ID >= td.ID {
			t.Fatal("not in id order")
		}
	}
	completed := walk("&completed=true")
	for _, td := range completed {
		if !td.Completed {
			t.Fatal("completed filter let an open todo through")
		}
	}
	if len(completed) != 8 {
		t.Fatalf("%d completed, want 8", len(completed))
	}
	due := walk("&due_after=2030-01-05T00:00:00Z&due_before=2030-01-15T00:00:00Z&completed=false")
	// Even i in 4..14 exclusive of the bounds: due days 7, 9, ..., 13 → i = 6, 8, 10, 12; minus completed (i%3==0: 6, 12).
	if len(due) != 2 || due[0].Title != "8" || due[1].Title != "10" {
		t.Fatalf("due filter gave %+v", due)
	}

	first := h.do(req{method: "GET", path: "/v1/todos?limit=5", token: token})
	var page struct {
		NextCursor string `json:"next_cursor"`
	}
	first.json(t, &page)
	cur := page.NextCursor
	tampered := []byte(cur)
	tampered[3] ^= 1
	if tampered[3] == '-' || tampered[3] == '_' || tampered[3] < '0' {
		tampered[3] = 'A'
	}
	for name, path := range map[string]string{
		"tampered":      "/v1/todos?cursor=" + string(tampered),
		"other filters": "/v1/todos?completed=true&cursor=" + cur,
		"garbage":       "/v1/todos?cursor=%25%25%25",
	} {
		res := h.do(req{method: "GET", path: path, token: token})
		if res.Status != http.StatusBadRequest || res.problem(t).Type != problem.TypeURI("invalid-cursor") {
			t.Fatalf("%s cursor: %d %s", name, res.Status, res.Body)
		}
	}
	if res := h.do(req{method: "GET", path: "/v1/todos?cursor=" + cur, token: other}); res.Status != http.StatusBadRequest {
		t.Fatalf("another user's cursor: %d", res.Status)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	res := h.do(req{method: "GET", path: "/health"})
	if res.Status != http.StatusOK || !jsonEqual(t, res.Body, []byte(`{"status":"ok"}`)) {
		t.Fatalf("health: %d %s", res.Status, res.Body)
	}
	var rep struct {
		Status string
		Checks []struct {
			Name, Status string
			LatencyMS    float64 `json:"latency_ms"`
		}
	}
	res = h.do(req{method: "GET", path: "/health/databases"})
	res.json(t, &rep)
	if res.Status != http.StatusOK || rep.Status != "ok" || len(rep.Checks) != 1 || rep.Checks[0].Name != "postgres" || rep.Checks[0].Status != "up" {
		t.Fatalf("health/databases: %d %s", res.Status, res.Body)
	}

	down := newHarness(t, func(o *httpapi.Options) {
		o.Checks = append(o.Checks, httpapi.Check{Name: "slow", Timeout: 50 * time.Millisecond, Fn: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}})
	})
	res = down.do(req{method: "GET", path: "/health/databases"})
	res.json(t, &rep)
	if res.Status != http.StatusServiceUnavailable || rep.Status != "down" || rep.Checks[0].Status != "up" || rep.Checks[1].Status != "down" {
		t.Fatalf("with a check timing out: %d %s", res.Status, res.Body)
	}
}

// TestOpenAPIMatchesRouter checks that the document is valid and describes exactly the
// routes the router serves.
func TestOpenAPIMatchesRouter(t *testing.T) {
	t.Parallel()
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	h := newHarness(t)
	router, ok := h.srv.Config.Handler.(chi.Routes)
	if !ok {
		t.Fatalf("handler %T is not a chi router", h.srv.Config.Handler)
	}
	var served []string
	err = chi.Walk(router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served = append(served, method+" "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Fatalf("documented:\n%s\nserved:\n%s", strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}
	res := h.do(req{method: "GET", path: "/openapi.json"})
	if res.Status != http.StatusOK || string(res.Body) != string(httpapi.OpenAPI()) {
		t.Fatalf("/openapi.json: %d", res.Status)
	}
}
