package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/api/internal/httpapi"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// TestLeaderboardCache: one ranking serves every leaderboard request within the TTL,
// with the freshness headers of the moment it was read (never newer than what it
// shows); after the TTL the next request sees the new state and its watermark.
func TestLeaderboardCache(t *testing.T) {
	t.Parallel()
	rm := newReadModel(t)
	const ttl = time.Second
	h := newHarness(t, withReadModel(rm.store), func(o *httpapi.Options) { o.LeaderboardCacheTTL = ttl })
	tokA, a := h.signUp()
	_, b := h.signUp()
	now := time.Now().UTC().Truncate(time.Millisecond)
	rm.put(t, readmodel.CollUsers, readmodel.User{ID: a.ID, DisplayName: "Ada", Version: 1}, readmodel.User{ID: b.ID, DisplayName: "Bob", Version: 1})
	rm.put(t, readmodel.CollStats,
		readmodel.Stats{UserID: a.ID, Completed: 1, Total: 1, Version: 2, UpdatedAt: now},
		readmodel.Stats{UserID: b.ID, Completed: 2, Total: 2, Version: 3, UpdatedAt: now})
	rm.put(t, readmodel.CollProjection, readmodel.Watermark{ID: readmodel.WatermarkID, StreamSeq: 7, AppliedAt: now, OccurredAt: now})

	type board struct {
		Top []struct {
			UserID    string `json:"user_id"`
			Completed int64  `json:"completed"`
		} `json:"top"`
		Me *struct {
			Rank int64 `json:"rank"`
		} `json:"me"`
	}
	get := func() (board, string) {
		t.Helper()
		res := h.do(req{method: "GET", path: "/v1/leaderboard", token: tokA})
		var lb board
		res.json(t, &lb)
		if res.Status != http.StatusOK {
			t.Fatalf("leaderboard: %d %s", res.Status, res.Body)
		}
		return lb, res.Header.Get(httpapi.ProjectionSeqHeader)
	}
	readFrom := time.Now() // the cached ranking is read after this
	lb, seq := get()
	if len(lb.Top) != 2 || lb.Top[0].UserID != b.ID || lb.Me == nil || lb.Me.Rank != 2 || seq != "7" {
		t.Fatalf("first read: %+v seq %s", lb, seq)
	}

	// Ada overtakes Bob, and the watermark moves.
	ctx := context.Background()
	if _, err := rm.db.Collection(readmodel.CollStats).UpdateOne(ctx, bson.D{{Key: "_id", Value: a.ID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "completed", Value: 5}, {Key: "total", Value: 5}, {Key: "version", Value: 4}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rm.db.Collection(readmodel.CollProjection).UpdateOne(ctx, bson.D{{Key: "_id", Value: readmodel.WatermarkID}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "stream_seq", Value: 8}}}}); err != nil {
		t.Fatal(err)
	}
	lb, seq = get()
	if time.Since(readFrom) < ttl { // only judge the cache while its TTL surely holds
		if lb.Top[0].UserID != b.ID || lb.Me.Rank != 2 || seq != "7" {
			t.Fatalf("within the TTL: %+v seq %s, want the cached ranking with its own watermark", lb, seq)
		}
	}
	// Once the TTL has passed, a request reads the new state and its watermark.
	sharedtest.Eventually(t, 10*ttl, func() (bool, string) {
		lb, seq = get()
		return lb.Top[0].UserID == a.ID && lb.Top[0].Completed == 5 && lb.Me.Rank == 1 && seq == "8",
			fmt.Sprintf("after the TTL: %+v seq %s, want Ada first at sequence 8", lb, seq)
	})
}
