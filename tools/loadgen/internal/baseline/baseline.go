// Package baseline holds the old synchronous dual write (each request writes
// PostgreSQL, then MongoDB, before it answers), measured beside the pipeline in the
// same run. It is not code of the services: it exists only to be measured against.
// (The MongoDB-protocol server's raw ceilings are measured by package ceilings.)
package baseline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
)

// UserID is the id of the n-th seeded user (see pgbench.SetupSQL, which seeds them).
func UserID(n int) uuid.UUID {
	return uuid.MustParse(fmt.Sprintf("00000000-0000-4000-8000-%012d", n))
}

// DualWrite runs clients goroutines for d, each creating todos the old way: insert the
// row in PostgreSQL (one transaction), then upsert its document into coll, then answer.
// users seeded users own the todos. It returns the distribution of whole writes.
func DualWrite(ctx context.Context, pool *pgxpool.Pool, coll *mongo.Collection, clients, users int, d time.Duration) stats.Summary {
	rec := stats.NewRecorder()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := dualWrite(ctx, pool, coll, UserID(1+(w+i*clients)%users))
				if err != nil && ctx.Err() != nil {
					return
				}
				now := time.Now()
				rec.Add("dual", stats.Sample{At: now, Latency: now.Sub(t0), Err: err != nil})
			}
		})
	}
	wg.Wait()
	return rec.Routes(time.Since(start))["dual"]
}

func dualWrite(ctx context.Context, pool *pgxpool.Pool, coll *mongo.Collection, owner uuid.UUID) error {
	id := uuid.Must(uuid.NewV7())
	now := time.Now().UTC()
	err := sharedpg.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO todos (id, user_id, title, notes, completed, completed_at, due, priority, version, created_at, updated_at)
VALUES ($1, $2, $3, NULL, false, NULL, NULL, 'normal', 1, $4, $4)`, id, owner, "dual write todo", now)
		return err
	})
	if err != nil {
		return fmt.Errorf("insert todo: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = coll.UpdateOne(mctx, bson.D{{Key: "_id", Value: id.String()}, {Key: "version", Value: bson.D{{Key: "$lt", Value: 1}}}},
		bson.D{{Key: "$set", Value: todoDoc(id.String(), owner.String(), now)}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("upsert todo document: %w", err)
	}
	return nil
}

func todoDoc(id, owner string, now time.Time) readmodel.Todo {
	return readmodel.Todo{ID: id, UserID: owner, Title: "load test todo", Priority: "normal", Version: 1, CreatedAt: now, UpdatedAt: now, ProjectedAt: now}
}
