package verify_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/api/internal/pipelinetest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestMain(m *testing.M) { pipelinetest.Main(m) }

// verify passes on equal databases and reports each planted difference: a missing
// document, a stale one, an extra one, and stats with wrong counts, a wrong version, a
// wrong deleted flag, missing or extra.
func TestVerifyDetectsPlantedDrift(t *testing.T) {
	t.Parallel()
	env := pipelinetest.New(t)
	ctx := sharedtest.Context(t, 2*time.Minute)

	w := pipelinetest.NewWriter(t, env.Store)
	u1, u2, u3, gone := w.CreateUser(), w.CreateUser(), w.CreateUser(), w.CreateUser()
	w.RenameUser(u1, "Ada")
	t1 := w.CreateTodo(u1, "one")
	w.SetCompleted(t1, true)
	t2 := w.CreateTodo(u2, "two")
	w.DeleteTodo(w.CreateTodo(u2, "gone"))
	w.CreateTodo(gone, "with the user")
	w.DeleteUser(gone)
	env.RelayOutbox(t, env.Pool)
	env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, env.Drained)
	db := env.Active(t)
	diffs, err := verify.Run(ctx, env.Store, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 0 {
		t.Fatalf("equal databases reported %v", diffs)
	}
	// The tombstone of a user deleted before stats carried versions has no user_stats
	// row, and no reader shows it: not drift.
	stats := db.Collection(readmodel.CollStats)
	old := bson.D{{Key: "_id", Value: uuid.Must(uuid.NewV7()).String()}, {Key: "source_version", Value: 7}, {Key: "deleted", Value: true}}
	if _, err := stats.InsertOne(ctx, old); err != nil {
		t.Fatal(err)
	}
	if diffs, err := verify.Run(ctx, env.Store, db); err != nil || len(diffs) != 0 {
		t.Fatalf("with an old stats tombstone: %v, %v; want no difference", diffs, err)
	}

	// Plant one difference of each kind.
	if _, err := db.Collection(readmodel.CollTodos).DeleteOne(ctx, bson.D{{Key: "_id", Value: t2.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Collection(readmodel.CollUsers).UpdateOne(ctx, bson.D{{Key: "_id", Value: u1.String()}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "display_name", Value: "User 1"}, {Key: "version", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	extra := uuid.Must(uuid.NewV7()).String()
	if _, err := db.Collection(readmodel.CollTodos).InsertOne(ctx, readmodel.Todo{ID: extra, UserID: u2.String(), Title: "extra", Priority: "low", Version: 1}); err != nil {
		t.Fatal(err)
	}
	for id, set := range map[uuid.UUID]bson.D{
		u1:   {{Key: "completed", Value: 5}},
		u2:   {{Key: "version", Value: 1}},
		gone: {{Key: "deleted", Value: false}},
	} {
		if _, err := stats.UpdateOne(ctx, bson.D{{Key: "_id", Value: id.String()}}, bson.D{{Key: "$set", Value: set}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stats.DeleteOne(ctx, bson.D{{Key: "_id", Value: u3.String()}}); err != nil {
		t.Fatal(err)
	}
	extraStats := uuid.Must(uuid.NewV7()).String()
	if _, err := stats.InsertOne(ctx, readmodel.Stats{UserID: extraStats, Version: 1}); err != nil {
		t.Fatal(err)
	}
	diffs, err = verify.Run(ctx, env.Store, db)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		readmodel.CollTodos + " " + t2.String():   "missing",
		readmodel.CollUsers + " " + u1.String():   "differs",
		readmodel.CollTodos + " " + extra:         "extra",
		readmodel.CollStats + " " + u1.String():   "differs",
		readmodel.CollStats + " " + u2.String():   "differs",
		readmodel.CollStats + " " + gone.String(): "differs",
		readmodel.CollStats + " " + u3.String():   "missing",
		readmodel.CollStats + " " + extraStats:    "extra",
	}
	for _, d := range diffs {
		t.Log(d)
		key := d.Collection + " " + d.ID
		if want[key] != d.Kind {
			t.Errorf("unexpected difference %s", d)
		}
		delete(want, key)
	}
	for k, kind := range want {
		t.Errorf("difference not reported: %s %s", k, kind)
	}
}
