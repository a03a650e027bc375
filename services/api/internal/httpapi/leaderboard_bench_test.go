package httpapi_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// BenchmarkLeaderboard reads the leaderboard (top 10 and the caller's line) from
// FerretDB, with its GIN indexes, holding 10,000 users: the read model's size at which
// issue 10 asks for its latency. "direct" is a read per request (LEADERBOARD_CACHE_TTL
// 0), "refresh" one read of the ranking the API caches, "cached" a request answered
// from it. Run it with
// `go test -run '^$' -bench Leaderboard -benchtime 20x ./internal/httpapi/`.
func BenchmarkLeaderboard(b *testing.B) {
	const users = 10000
	srv := ferret.StartTest(b)
	client := srv.Client(b)
	ctx := context.Background()
	name := "lb_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	db := client.Database(name)
	if err := ferretindex.EnsureAll(ctx, srv.PostgreSQLURL(), db, db, slog.New(slog.DiscardHandler)); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	var us, sts []any
	ids := make([]string, users)
	for i := range users {
		ids[i] = uuid.Must(uuid.NewV7()).String()
		us = append(us, readmodel.User{ID: ids[i], Email: fmt.Sprintf("u%d@example.com", i), DisplayName: fmt.Sprintf("User %d", i), Version: 1, CreatedAt: now, UpdatedAt: now})
		sts = append(sts, readmodel.Stats{UserID: ids[i], Open: int64(i % 7), Completed: int64(i % 101), Total: int64(i%7 + i%101), Version: 2, UpdatedAt: now})
	}
	for _, c := range []struct {
		coll string
		docs []any
	}{{readmodel.CollUsers, us}, {readmodel.CollStats, sts}} {
		if _, err := db.Collection(c.coll).InsertMany(ctx, c.docs, options.InsertMany().SetOrdered(false)); err != nil {
			b.Fatal(err)
		}
	}
	store := readside.New(client, name)
	check := func(lb readside.Leaderboard, err error) {
		if err != nil || len(lb.Top) != 10 || lb.Me == nil || lb.Top[0].DisplayName == "" {
			b.Fatalf("leaderboard: %+v, %v", lb, err)
		}
	}
	b.Run("direct", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			check(store.Leaderboard(ctx, 10, ids[i%users]))
		}
	})
	var r *readside.Ranking
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			var err error
			if r, err = store.Ranking(ctx, 100000); err != nil || r.Len() != users {
				b.Fatalf("ranking of %d lines: %v", r.Len(), err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			check(r.Leaderboard(ctx, 10, ids[i%users]))
		}
	})
}
