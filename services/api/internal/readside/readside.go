// Package readside runs the API's queries on the MongoDB read model the projector
// writes: a user's stats and document versions, the leaderboard, the projection
// watermark and the dead-letter count. The documents, the layout and the filters both
// services agree on are package readmodel's, of module shared. The API never writes
// there.
//
// Tombstones are never shown: Stats and the leaderboard filter them out
// (readmodel.NotDeleted, readmodel.LiveStats). Versions reads them too, since a delete
// is as much a position of the projection as any other write.
//
// The queries only use what both MongoDB and the FerretDB stand-in run: finds with
// filters, sorts and limits, counts, and lookups by _id.
package readside

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// ErrNotFound is returned when the asked-for document does not exist (or is a
// tombstone).
var ErrNotFound = errors.New("read model: not found")

// Store reads the read model. It is safe for concurrent use; every method does its own
// round trips under the caller's ctx, so give ctx a deadline.
type Store struct {
	rm *readmodel.Store
}

// New reads through client, with control as the control database
// (readmodel.DefaultDatabase when empty).
func New(client *mongo.Client, control string) *Store {
	return &Store{rm: readmodel.NewStore(client, control)}
}

// Stats returns a user's stats, or ErrNotFound when the projection has none yet.
func (s *Store) Stats(ctx context.Context, userID string) (readmodel.Stats, error) {
	db, err := s.rm.Active(ctx)
	if err != nil {
		return readmodel.Stats{}, err
	}
	var st readmodel.Stats
	err = db.Collection(readmodel.CollStats).FindOne(ctx, bson.D{{Key: "_id", Value: userID}, readmodel.NotDeleted}).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return readmodel.Stats{}, ErrNotFound
	}
	if err != nil {
		return readmodel.Stats{}, fmt.Errorf("read stats of %s: %w", userID, err)
	}
	return st, nil
}

// Versions returns the versions of a user's document and of their stats document in
// the active read model, tombstones included, 0 for a document not there yet: how far
// the projection has applied that user's events (a read-your-writes position). Each is
// one lookup by _id, which the FerretDB stand-in pushes down to PostgreSQL.
func (s *Store) Versions(ctx context.Context, userID string) (user, stats int64, err error) {
	db, err := s.rm.Active(ctx)
	if err != nil {
		return 0, 0, err
	}
	g, gctx := errgroup.WithContext(ctx)
	version := func(coll string, out *int64) func() error {
		return func() error {
			var doc struct {
				Version int64 `bson:"version"`
			}
			err := db.Collection(coll).FindOne(gctx, bson.D{{Key: "_id", Value: userID}},
				options.FindOne().SetProjection(bson.D{{Key: "version", Value: 1}})).Decode(&doc)
			switch {
			case errors.Is(err, mongo.ErrNoDocuments):
				return nil
			case err != nil:
				return fmt.Errorf("read the %s version of %s: %w", coll, userID, err)
			}
			*out = doc.Version
			return nil
		}
	}
	g.Go(version(readmodel.CollUsers, &user))
	g.Go(version(readmodel.CollStats, &stats))
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	return user, stats, nil
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

// MaxTop is the longest top of the leaderboard a Ranking answers.
const MaxTop = 100

// Ranking is the leaderboard's order at one moment: live users in
// readmodel.LeaderboardSort order, up to the limit it was read with, with the display
// names of the first MaxTop. It is immutable, so one Ranking can serve many callers
// (the API caches one for about a second).
type Ranking struct {
	entries []Entry
	pos     map[string]int
	// complete is true when entries hold every live user's line.
	complete bool
	// db is the read-model database it was read from, for callers beyond entries.
	db *mongo.Database
}

// Len is the number of lines the ranking holds.
func (r *Ranking) Len() int { return len(r.entries) }

// Ranking reads the order of up to limit live users in one query (the leaderboard
// index's order on MongoDB; FerretDB sorts them in memory, which is why the API keeps
// the result for a moment rather than asking per request), and the display names of
// the first MaxTop of them.
func (s *Store) Ranking(ctx context.Context, limit int) (*Ranking, error) {
	if limit < 1 {
		return nil, fmt.Errorf("ranking limit %d: want at least 1", limit)
	}
	db, err := s.rm.Active(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := db.Collection(readmodel.CollStats).Find(ctx, bson.D{readmodel.LiveStats}, options.Find().SetSort(readmodel.LeaderboardSort).
		SetLimit(int64(limit)).SetProjection(bson.D{{Key: "completed", Value: 1}, {Key: "total", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("read the leaderboard: %w", err)
	}
	var lines []readmodel.Stats
	if err := cur.All(ctx, &lines); err != nil {
		return nil, fmt.Errorf("read the leaderboard: %w", err)
	}
	r := &Ranking{entries: make([]Entry, len(lines)), pos: make(map[string]int, len(lines)), complete: len(lines) < limit, db: db}
	for i, st := range lines {
		r.entries[i] = Entry{Rank: int64(i + 1), UserID: st.UserID, Completed: st.Completed, Total: st.Total}
		r.pos[st.UserID] = i
	}
	top := r.entries[:min(len(r.entries), MaxTop)]
	ids := make([]string, len(top))
	for i, e := range top {
		ids[i] = e.UserID
	}
	names, err := displayNames(ctx, db.Collection(readmodel.CollUsers), ids)
	if err != nil {
		return nil, err
	}
	for i := range top {
		top[i].DisplayName = names[top[i].UserID]
	}
	return r, nil
}

// Leaderboard answers the top n (1 to MaxTop) and the line of caller (a user id; ""
// for none) from the ranking. A caller beyond the lines the ranking holds is ranked by
// a count on the database it was read from.
func (r *Ranking) Leaderboard(ctx context.Context, n int, caller string) (Leaderboard, error) {
	if n < 1 || n > MaxTop {
		return Leaderboard{}, fmt.Errorf("leaderboard size %d: want 1 to %d", n, MaxTop)
	}
	lb := Leaderboard{Top: slices.Clone(r.entries[:min(n, len(r.entries))])}
	if caller == "" {
		return lb, nil
	}
	if i, ok := r.pos[caller]; ok {
		me := r.entries[i]
		lb.Me = &me
	} else if !r.complete {
		me, err := rank(ctx, r.db.Collection(readmodel.CollStats), caller)
		if err != nil {
			return Leaderboard{}, err
		}
		lb.Me = me
	}
	if lb.Me != nil && lb.Me.DisplayName == "" {
		names, err := displayNames(ctx, r.db.Collection(readmodel.CollUsers), []string{caller})
		if err != nil {
			return Leaderboard{}, err
		}
		lb.Me.DisplayName = names[caller]
	}
	return lb, nil
}

// Leaderboard returns the top n users (1 to MaxTop) and the line of caller (a user id;
// "" for none), read now.
func (s *Store) Leaderboard(ctx context.Context, n int, caller string) (Leaderboard, error) {
	if n < 1 || n > MaxTop {
		return Leaderboard{}, fmt.Errorf("leaderboard size %d: want 1 to %d", n, MaxTop)
	}
	r, err := s.Ranking(ctx, n)
	if err != nil {
		return Leaderboard{}, err
	}
	return r.Leaderboard(ctx, n, caller)
}

// rank counts the users ahead of userID in readmodel.LeaderboardSort order.
func rank(ctx context.Context, stats *mongo.Collection, userID string) (*Entry, error) {
	var st readmodel.Stats
	err := stats.FindOne(ctx, bson.D{{Key: "_id", Value: userID}, readmodel.LiveStats}).Decode(&st)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stats of %s: %w", userID, err)
	}
	ahead, err := stats.CountDocuments(ctx, bson.D{readmodel.LiveStats, {Key: "$or", Value: bson.A{
		bson.D{{Key: "completed", Value: bson.D{{Key: "$gt", Value: st.Completed}}}},
		bson.D{{Key: "completed", Value: st.Completed}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: userID}}}},
	}}})
	if err != nil {
		return nil, fmt.Errorf("rank %s: %w", userID, err)
	}
	return &Entry{Rank: ahead + 1, UserID: userID, Completed: st.Completed, Total: st.Total}, nil
}

// displayNamesInFlight bounds the lookups displayNames runs at once.
const displayNamesInFlight = 8

// displayNames looks up each user by _id: one indexed lookup each, concurrently, where
// a single {_id: {$in: ...}} would make FerretDB read the whole collection (it pushes
// no $in down to PostgreSQL). Deleted users have no name.
func displayNames(ctx context.Context, users *mongo.Collection, ids []string) (map[string]string, error) {
	found := make([]string, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(displayNamesInFlight)
	for i, id := range ids {
		g.Go(func() error {
			var u readmodel.User
			err := users.FindOne(gctx, bson.D{{Key: "_id", Value: id}, readmodel.NotDeleted},
				options.FindOne().SetProjection(bson.D{{Key: "display_name", Value: 1}})).Decode(&u)
			switch {
			case errors.Is(err, mongo.ErrNoDocuments):
				return nil
			case err != nil:
				return fmt.Errorf("read the display name of %s: %w", id, err)
			}
			found[i] = u.DisplayName
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	names := make(map[string]string, len(ids))
	for i, id := range ids {
		if found[i] != "" {
			names[id] = found[i]
		}
	}
	return names, nil
}

// Watermark returns the projection watermark of the active read model, or ErrNotFound
// before the first event is applied.
func (s *Store) Watermark(ctx context.Context) (readmodel.Watermark, error) {
	db, err := s.rm.Active(ctx)
	if err != nil {
		return readmodel.Watermark{}, err
	}
	var w readmodel.Watermark
	err = db.Collection(readmodel.CollProjection).FindOne(ctx, bson.D{{Key: "_id", Value: readmodel.WatermarkID}}).Decode(&w)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return readmodel.Watermark{}, ErrNotFound
	}
	if err != nil {
		return readmodel.Watermark{}, fmt.Errorf("read the projection watermark: %w", err)
	}
	return w, nil
}

// DeadLetterCount counts the dead letters waiting for an operator.
func (s *Store) DeadLetterCount(ctx context.Context) (int64, error) {
	n, err := s.rm.Control().Collection(readmodel.CollDeadLetters).CountDocuments(ctx, readmodel.PendingDeadLettersFilter)
	if err != nil {
		return 0, fmt.Errorf("count dead letters: %w", err)
	}
	return n, nil
}
