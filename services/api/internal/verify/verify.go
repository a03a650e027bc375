// Package verify compares the source of truth (PostgreSQL) with the read model
// (MongoDB) document by document, as package shared/drift compares them: users and
// todos as live documents, stats row by row with user_stats, deleted users' last
// snapshots included.
package verify

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/shared/drift"
)

// Run loads both sides and compares them. It reads PostgreSQL in one read-only
// REPEATABLE READ transaction (one snapshot for users, todos and stats); run it after
// writes stop, or differences still in flight through the pipeline show as drift.
func Run(ctx context.Context, store *postgres.Store, readModel *mongo.Database) ([]drift.Difference, error) {
	want, err := fromPostgres(ctx, store)
	if err != nil {
		return nil, err
	}
	got, err := drift.FromMongo(ctx, readModel)
	if err != nil {
		return nil, err
	}
	return drift.Compare(want, got), nil
}

// fromPostgres is the snapshot the read model must show for the source of truth.
func fromPostgres(ctx context.Context, store *postgres.Store) (drift.Snapshot, error) {
	s := drift.NewSnapshot()
	src, err := store.Source(ctx)
	if err != nil {
		return s, err
	}
	for _, u := range src.Users {
		s.AddUser(u.Data())
	}
	for _, t := range src.Todos {
		s.AddTodo(t.Data())
	}
	for id, st := range src.Stats {
		s.AddStats(id, st)
	}
	return s, nil
}
