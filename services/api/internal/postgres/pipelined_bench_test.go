package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/todos"
	"github.com/outboxtodo/outboxtodo/services/api/internal/tokens"
	"github.com/outboxtodo/outboxtodo/services/api/internal/users"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
)

// BenchmarkBeginWithBatch compares 32 writers creating todos with the BEGIN sent on its
// own and with it in the create's batch, alternating rounds of 2 s so that both see the
// same machine: run with -benchtime 1x.
func BenchmarkBeginWithBatch(b *testing.B) {
	ctx := context.Background()
	const writers, rounds, round = 32, 6, 2 * time.Second
	pool, err := sharedpg.Connect(ctx, dbtest.New(b), sharedpg.PoolConfig{MaxConns: writers})
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	s := New(pool, true)
	owners := make([]uuid.UUID, writers)
	for i := range owners {
		_, hash := tokens.New()
		u := users.SignUp{Email: fmt.Sprintf("b%d@example.com", i), DisplayName: "B"}.User(uuid.New(), s.Now())
		if err := s.CreateUser(ctx, u, tokens.Token{ID: uuid.New(), UserID: u.ID, Hash: hash, CreatedAt: s.Now()}, event.TraceContext{}, nil); err != nil {
			b.Fatal(err)
		}
		owners[i] = u.ID
	}
	modes := []struct {
		name  string
		begin sharedpg.Beginner
	}{{"begin_alone", pool}, {"begin_in_batch", pipelined{pool}}}
	total := map[string]int64{}
	for range rounds {
		for _, m := range modes {
			var n atomic.Int64
			rctx, cancel := context.WithTimeout(ctx, round)
			var wg sync.WaitGroup
			for _, owner := range owners {
				wg.Go(func() {
					for rctx.Err() == nil {
						td := todos.New{Title: "b", Priority: todos.Normal}.Todo(uuid.New(), owner, s.Now())
						ev, err := event.New(event.TodoCreated, td.ID, td.UserID, td.Version, td.CreatedAt, event.TraceContext{}, td.Data())
						if err != nil {
							b.Error(err)
							return
						}
						err = sharedpg.WithTx(rctx, m.begin, func(tx pgx.Tx) error {
							c := &change{notify: true, pool: pool}
							c.b.Queue(`INSERT INTO todos (`+todoColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
								td.ID, td.UserID, td.Title, td.Notes, td.Completed, td.CompletedAt, td.Due, td.Priority, td.Version, td.CreatedAt, td.UpdatedAt)
							c.countTodos(td.UserID, 1, 0, 0)
							if err := c.events(ev); err != nil {
								return err
							}
							return c.send(rctx, tx, "create todo")
						})
						if err == nil {
							n.Add(1)
						}
					}
				})
			}
			wg.Wait()
			cancel()
			total[m.name] += n.Load()
			b.Logf("%s: %.0f creates/s", m.name, float64(n.Load())/round.Seconds())
		}
	}
	for _, m := range modes {
		b.ReportMetric(float64(total[m.name])/(rounds*round).Seconds(), m.name+"_creates/s")
	}
}
