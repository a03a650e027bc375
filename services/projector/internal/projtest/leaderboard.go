package projtest

import (
	"errors"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// LeaderboardLine is one live user's stats with their display name.
type LeaderboardLine struct {
	readmodel.Stats
	DisplayName string
}

// Leaderboard reads the stats of db's live users in the leaderboard's order, each with
// the user's display name: the documents the API ranks, selected and sorted as the
// contract says (readmodel.LiveStats, readmodel.LeaderboardSort), so that a test sees
// whether the projector's writes make the leaderboard they should.
func Leaderboard(t testing.TB, db *mongo.Database) []LeaderboardLine {
	t.Helper()
	ctx := sharedtest.Context(t, 30*time.Second)
	cur, err := db.Collection(readmodel.CollStats).Find(ctx, bson.D{readmodel.LiveStats}, options.Find().SetSort(readmodel.LeaderboardSort))
	if err != nil {
		t.Fatalf("read the leaderboard: %v", err)
	}
	var stats []readmodel.Stats
	if err := cur.All(ctx, &stats); err != nil {
		t.Fatalf("read the leaderboard: %v", err)
	}
	lines := make([]LeaderboardLine, len(stats))
	for i, st := range stats {
		var u readmodel.User
		err := db.Collection(readmodel.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: st.UserID}, readmodel.NotDeleted}).Decode(&u)
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			t.Fatalf("read the display name of %s: %v", st.UserID, err)
		}
		lines[i] = LeaderboardLine{Stats: st, DisplayName: u.DisplayName}
	}
	return lines
}
