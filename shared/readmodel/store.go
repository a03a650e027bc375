package readmodel

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// NotDeleted is the filter clause every reader adds: tombstones are never shown.
var NotDeleted = bson.E{Key: "deleted", Value: bson.D{{Key: "$ne", Value: true}}}

// LiveStats selects the stats of live users by equality, the leading key of the
// leaderboard index: Stats always stores deleted, so no $ne is needed there.
var LiveStats = bson.E{Key: "deleted", Value: false}

// LeaderboardSort ranks by completed todos, most first, ties broken by user id
// (UUIDv7, so the earlier sign-up first): a total order, stable across calls. With
// LiveStats it is the leaderboard index's key (EnsureIndexes), so that on MongoDB the
// index serves the leaderboard's query.
var LeaderboardSort = bson.D{{Key: "completed", Value: -1}, {Key: "_id", Value: 1}}

// PendingDeadLettersFilter selects dead letters not yet redriven.
var PendingDeadLettersFilter = bson.D{{Key: "redriven_at", Value: bson.D{{Key: "$exists", Value: false}}}}

// Store finds the databases of the read model. It is safe for concurrent use; Active
// and ActiveName do a round trip under the caller's ctx, so give ctx a deadline.
type Store struct {
	client  *mongo.Client
	control string
}

// NewStore reads through client, with control as the control database (DefaultDatabase
// when empty).
func NewStore(client *mongo.Client, control string) *Store {
	if control == "" {
		control = DefaultDatabase
	}
	return &Store{client: client, control: control}
}

// Control is the control database: the pointer and the dead letters.
func (s *Store) Control() *mongo.Database { return s.client.Database(s.control) }

// ActiveName names the active read-model database: the pointer's, or the control
// database's own name when no rebuild has switched it yet.
func (s *Store) ActiveName(ctx context.Context) (string, error) {
	var p Pointer
	err := s.Control().Collection(CollPointer).FindOne(ctx, bson.D{{Key: "_id", Value: PointerID}}).Decode(&p)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		return s.control, nil
	case err != nil:
		return "", fmt.Errorf("read the read-model pointer: %w", err)
	}
	return p.Database, nil
}

// Active is the active read-model database (see ActiveName).
func (s *Store) Active(ctx context.Context) (*mongo.Database, error) {
	name, err := s.ActiveName(ctx)
	if err != nil {
		return nil, err
	}
	return s.client.Database(name), nil
}

// EnsureIndexes creates the indexes of a read-model database and of the control
// database (idempotent): each serves a query one of the services runs. Only plain and
// compound indexes: FerretDB has no partial or TTL indexes.
func EnsureIndexes(ctx context.Context, readModel, control *mongo.Database) error {
	sets := []struct {
		coll   *mongo.Collection
		models []mongo.IndexModel
	}{
		{readModel.Collection(CollTodos), []mongo.IndexModel{
			{Keys: bson.D{{Key: "user_id", Value: 1}}, Options: options.Index().SetName("user_id")},
		}},
		{readModel.Collection(CollStats), []mongo.IndexModel{
			{Keys: append(bson.D{{Key: LiveStats.Key, Value: 1}}, LeaderboardSort...), Options: options.Index().SetName("leaderboard")},
		}},
		{control.Collection(CollDeadLetters), []mongo.IndexModel{
			{Keys: bson.D{{Key: "redriven_at", Value: 1}}, Options: options.Index().SetName("redriven_at")},
		}},
	}
	for _, s := range sets {
		if _, err := s.coll.Indexes().CreateMany(ctx, s.models); err != nil {
			return fmt.Errorf("create indexes on %s.%s: %w", s.coll.Database().Name(), s.coll.Name(), err)
		}
	}
	return nil
}
