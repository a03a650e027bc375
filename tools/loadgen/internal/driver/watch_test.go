package driver

import (
	"log/slog"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
)

// On the stand-in, the probe keeps one write in every, records a lag once the read
// model shows the written version or a newer one, and keeps waiting for the rest.
func TestWatcherOnFerretDB(t *testing.T) {
	t.Parallel()
	srv := ferret.StartTest(t)
	ctx := sharedtest.Context(t, time.Minute)
	coll := srv.Client(t).Database("watch_test").Collection("todos")
	if _, err := coll.InsertMany(ctx, []any{
		bson.D{{Key: "_id", Value: "b"}, {Key: "version", Value: 2}}, // as written
		bson.D{{Key: "_id", Value: "d"}, {Key: "version", Value: 5}}, // newer than written
		bson.D{{Key: "_id", Value: "f"}, {Key: "version", Value: 1}}, // older than written
	}); err != nil {
		t.Fatal(err)
	}

	w := NewWatcher(coll, 2, time.Millisecond, 2, slog.New(slog.DiscardHandler))
	acked := time.Now()
	for i, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		// Every second offer is kept: b, d, f and h.
		w.Offer(id, int64(i/2+1), acked)
	}
	if err := w.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	lags, unseen, poll := w.Take()
	if len(lags) != 2 || unseen != 2 || poll <= 0 {
		t.Fatalf("after one poll: %d lags, %d unseen, mean poll %s; want 2 (b and d), 2 (f and h) and a poll time", len(lags), unseen, poll)
	}
	for _, l := range lags {
		if l.Lag <= 0 || l.Visible.Before(acked) {
			t.Fatalf("lag %+v: want it measured from the acknowledgement", l)
		}
	}

	if _, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: "f"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "version", Value: 3}}}}); err != nil {
		t.Fatal(err)
	}
	if err := w.pollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if lags, unseen, _ = w.Take(); len(lags) != 1 || unseen != 1 {
		t.Fatalf("after f caught up: %d new lags, %d unseen; want 1 and 1 (h)", len(lags), unseen)
	}
}
