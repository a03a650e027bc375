package httpapi_test

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

func TestTodoCapAnswersConflict(t *testing.T) {
	t.Parallel()
	pool, dbURL := dbtest.NewPool(t)
	h := newHarnessOn(t, pool, dbURL, &atomic.Int64{}, func(o *httpapi.Options) {
		o.Store = postgres.New(pool, true, postgres.MaxTodosPerUser(2))
	})
	token, _ := h.signUp()
	for range 2 {
		h.createTodo(token, map[string]string{"title": "t"})
	}
	res := h.do(req{method: "POST", path: "/v1/todos", token: token, body: map[string]string{"title": "one too many"}})
	if p := res.problem(t); res.Status != http.StatusConflict || p.Type != problem.TypeURI("too-many-todos") {
		t.Fatalf("past the cap: %d %s", res.Status, res.Body)
	}
}
