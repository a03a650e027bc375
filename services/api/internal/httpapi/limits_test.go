package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/problem"
)

func TestTodoCapAnswersConflict(t *testing.T) {
	t.Parallel()
	var pool *pgxpool.Pool
	h := newHarness(t, func(o *httpapi.Options) {
		pool, _ = dbtest.NewPool(t)
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
