package readmodel

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// ErrNotFound is returned when the asked-for document does not exist (or is a
// tombstone).
var ErrNotFound = errors.New("read model: not found")

// NotDeleted is the filter clause every reader adds: tombstones are never shown.
var NotDeleted = bson.E{Key: "deleted", Value: bson.D{{Key: "$ne", Value: true}}}

// liveStats selects the stats of live users by equality, the leading key of the
// leaderboard index: Stats always stores deleted, so no $ne is needed there.
var liveStats = bson.E{Key: "deleted", Value: false}

// Store reads the read model. It is safe for concurrent use; every method does its own
// round trips under the caller's ctx, so give ctx a deadline.
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

// Switch makes database the active read model.
func (s *Store) Switch(ctx context.Context, p Pointer) error {
	p.ID = PointerID
	_, err := s.Control().Collection(CollPointer).ReplaceOne(ctx, bson.D{{Key: "_id", Value: PointerID}}, p,
		options.Replace().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("switch the read model to %s: %w", p.Database, err)
	}
	return nil
}

// Stats returns a user's stats, or ErrNotFound when the projection has none yet.
func (s *Store) Stats(ctx context.Context, userID string) (Stats, error) {
	db, err := s.Active(ctx)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	err = db.Collection(CollStats).FindOne(ctx, bson.D{{Key: "_id", Value: userID}, NotDeleted}).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Stats{}, ErrNotFound
	}
	if err != nil {
		return Stats{}, fmt.Errorf("read stats of %s: %w", userID, err)
	}
	return st, nil
}

// Entry is one line of the leaderboard.
type Entry struct {
	Rank        int64
	UserID      string
	DisplayName string
	Completed   int64
	Total       int64
}

// Leaderboard is the top of the ranking and the caller's own line.
type Leaderboard struct {
	Top []Entry
	// Me is the caller's line, nil when the projection has no stats for them yet.
	Me *Entry
}

// leaderboardSort ranks by completed todos, most first, ties broken by user id (UUIDv7,
// so the earlier sign-up first): a total order, stable across calls.
var leaderboardSort = bson.D{{Key: "completed", Value: -1}, {Key: "_id", Value: 1}}

// Leaderboard returns the top n users (1 to 100) and the rank of caller (a user id; ""
// for none).
func (s *Store) Leaderboard(ctx context.Context, n int, caller string) (Leaderboard, error) {
	if n < 1 || n > 100 {
		return Leaderboard{}, fmt.Errorf("leaderboard size %d: want 1 to 100", n)
	}
	db, err := s.Active(ctx)
	if err != nil {
		return Leaderboard{}, err
	}
	stats := db.Collection(CollStats)
	cur, err := stats.Find(ctx, bson.D{liveStats}, options.Find().SetSort(leaderboardSort).SetLimit(int64(n)))
	if err != nil {
		return Leaderboard{}, fmt.Errorf("read the leaderboard: %w", err)
	}
	var top []Stats
	if err := cur.All(ctx, &top); err != nil {
		return Leaderboard{}, fmt.Errorf("read the leaderboard: %w", err)
	}
	var lb Leaderboard
	ids := make([]string, 0, len(top)+1)
	for i, st := range top {
		lb.Top = append(lb.Top, Entry{Rank: int64(i + 1), UserID: st.UserID, Completed: st.Completed, Total: st.Total})
		ids = append(ids, st.UserID)
	}
	if caller != "" {
		me, err := s.rank(ctx, stats, caller)
		if err != nil {
			return Leaderboard{}, err
		}
		if me != nil {
			lb.Me = me
			ids = append(ids, caller)
		}
	}
	names, err := displayNames(ctx, db.Collection(CollUsers), ids)
	if err != nil {
		return Leaderboard{}, err
	}
	for i := range lb.Top {
		lb.Top[i].DisplayName = names[lb.Top[i].UserID]
	}
	if lb.Me != nil {
		lb.Me.DisplayName = names[caller]
	}
	return lb, nil
}

// rank counts the users ahead of the caller in leaderboardSort order.
func (s *Store) rank(ctx context.Context, stats *mongo.Collection, userID string) (*Entry, error) {
	var st Stats
	err := stats.FindOne(ctx, bson.D{{Key: "_id", Value: userID}, liveStats}).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stats of %s: %w", userID, err)
	}
	ahead, err := stats.CountDocuments(ctx, bson.D{liveStats, {Key: "$or", Value: bson.A{
		bson.D{{Key: "completed", Value: bson.D{{Key: "$gt", Value: st.Completed}}}},
		bson.D{{Key: "completed", Value: st.Completed}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: userID}}}},
	}}})
	if err != nil {
		return nil, fmt.Errorf("rank %s: %w", userID, err)
	}
	return &Entry{Rank: ahead + 1, UserID: userID, Completed: st.Completed, Total: st.Total}, nil
}

func displayNames(ctx context.Context, users *mongo.Collection, ids []string) (map[string]string, error) {
	names := make(map[string]string, len(ids))
	if len(ids) == 0 {
		return names, nil
	}
	cur, err := users.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}, NotDeleted},
		options.Find().SetProjection(bson.D{{Key: "display_name", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("read display names: %w", err)
	}
	var us []User
	if err := cur.All(ctx, &us); err != nil {
		return nil, fmt.Errorf("read display names: %w", err)
	}
	for _, u := range us {
		names[u.ID] = u.DisplayName
	}
	return names, nil
}

// Watermark returns the projection watermark of the active read model, or ErrNotFound
// before the first event is applied.
func (s *Store) Watermark(ctx context.Context) (Watermark, error) {
	db, err := s.Active(ctx)
	if err != nil {
		return Watermark{}, err
	}
	var w Watermark
	err = db.Collection(CollProjection).FindOne(ctx, bson.D{{Key: "_id", Value: WatermarkID}}).Decode(&w)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return Watermark{}, ErrNotFound
	}
	if err != nil {
		return Watermark{}, fmt.Errorf("read the projection watermark: %w", err)
	}
	return w, nil
}

// PendingDeadLettersFilter selects dead letters not yet redriven.
var PendingDeadLettersFilter = bson.D{{Key: "redriven_at", Value: bson.D{{Key: "$exists", Value: false}}}}

// DeadLetterCount counts the dead letters waiting for an operator.
func (s *Store) DeadLetterCount(ctx context.Context) (int64, error) {
	n, err := s.Control().Collection(CollDeadLetters).CountDocuments(ctx, PendingDeadLettersFilter)
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return n, nil
}

// EnsureIndexes creates the indexes of a read-model database and of the control
// database (idempotent). Only plain and compound indexes: FerretDB has no partial or
// TTL indexes.
func EnsureIndexes(ctx context.Context, readModel, control *mongo.Database) error {
	sets := []struct {
		coll   *mongo.Collection
		models []mongo.IndexModel
	}{
		{readModel.Collection(CollTodos), []mongo.IndexModel{
			{Keys: bson.D{{Key: "user_id", Value: 1}}, Options: options.Index().SetName("user_id")},
		}},
		{readModel.Collection(CollStats), []mongo.IndexModel{
			{Keys: bson.D{{Key: "deleted", Value: 1}, {Key: "completed", Value: -1}, {Key: "_id", Value: 1}},
				Options: options.Index().SetName("leaderboard")},
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
