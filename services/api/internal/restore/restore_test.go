package restore_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/apitest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/pipelinetest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/services/api/internal/restore"
	"github.com/outboxtodo/outboxtodo/services/api/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

func TestMain(m *testing.M) { pipelinetest.Main(m) }

// The restore as it happens: the database is dumped, more is written, published and
// projected, the dump is restored, and the cut-over runs. New writes then reuse the
// versions of the lost timeline with other content, and the read model equals the
// restored source (verify clean, leaderboard right): a user deleted before the backup
// keeps their last stats, and a write the backup held unpublished, which the lost
// timeline had published under the same event id, is published again.
func TestRestoreCutover(t *testing.T) {
	t.Parallel()
	env := pipelinetest.New(t)
	pool, dbURL := env.Pool, env.DBURL
	ctx := sharedtest.Context(t, 3*time.Minute)
	cfg := restore.Config{Stream: pipelinetest.Stream, MembersBucket: pipelinetest.MembersBucket}

	w := pipelinetest.NewWriter(t, env.Store)
	u1, u2, u3 := w.CreateUser(), w.CreateUser(), w.CreateUser()
	a, b := w.CreateTodo(u1, "a"), w.CreateTodo(u2, "b")
	w.CreateTodo(u3, "c")
	w.SetCompleted(b, true)
	w.DeleteUser(u3)
	env.RelayOutbox(t, pool)
	member := env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, env.Verified(t, env.Store))
	w.RenameUser(u2, "renamed before the backup")

	dump := filepath.Join(t.TempDir(), "backup.dump")
	run(t, "pg_dump", "--format=custom", "--file="+dump, "--dbname="+dbURL)

	// The lost timeline.
	w.RenameUser(u1, "lost name")
	w.SetCompleted(a, true)
	w.CreateTodo(u2, "lost todo")
	env.RelayOutbox(t, pool)
	sharedtest.Eventually(t, time.Minute, env.Verified(t, env.Store))

	restoredURL := dbtest.NewEmpty(t)
	run(t, "pg_restore", "--no-owner", "--dbname="+restoredURL, dump)
	restored := apitest.Pool(t, restoredURL)
	source := postgres.New(restored, false)
	w.On(source)

	if _, err := restore.Run(ctx, cfg, source, env.JS, env.ReadModel); !errors.Is(err, restore.ErrLive) {
		t.Fatalf("cut-over with a projector running: %v, want ErrLive", err)
	}
	member.Stop()
	if _, err := restored.Exec(ctx, `INSERT INTO publisher_replicas (replica_id, expires_at) VALUES ('p1', now() + interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Run(ctx, cfg, source, env.JS, env.ReadModel); !errors.Is(err, restore.ErrLive) {
		t.Fatalf("cut-over with a publisher running: %v, want ErrLive", err)
	}
	if _, err := restored.Exec(ctx, `DELETE FROM publisher_replicas`); err != nil {
		t.Fatal(err)
	}
	// The active database is the control database, which holds the dead letters: they
	// are counted, not dropped with it unseen.
	if _, err := env.ReadModel.Control().Collection(readmodel.CollDeadLetters).InsertOne(ctx,
		readmodel.DeadLetter{ID: pipelinetest.Stream + ":999999", Stream: pipelinetest.Stream, StreamSeq: 999999, Error: "lost timeline"}); err != nil {
		t.Fatal(err)
	}
	rep, err := restore.Run(ctx, cfg, source, env.JS, env.ReadModel)
	if err != nil {
		t.Fatal(err)
	}
	// u1, u2 (its rename is pending in the outbox), a and b; u3 deleted.
	if rep.StreamAbsent || rep.StreamMessages == 0 || rep.Database != pipelinetest.Control || rep.DeadLetters != 1 || rep.Resync.Emitted != 3 || rep.Resync.Pending != 1 ||
		rep.Resync.Tombstones != 0 || rep.DeletedUsers != 1 {
		t.Fatalf("report = %+v", rep)
	}

	w.RenameUser(u1, "renamed after the restore") // version 2, as "lost name"
	w.DeleteTodo(a)                               // version 2, as the lost completion
	env.RelayOutbox(t, restored)
	// The projector creates its consumers and the read model's indexes at start.
	env.StartProjector(t)
	sharedtest.Eventually(t, time.Minute, env.Verified(t, source))
	db := env.Active(t)
	diffs, err := verify.Run(ctx, source, db)
	if err != nil || len(diffs) > 0 {
		t.Fatalf("verify after the cut-over: %v, %v", diffs, err)
	}
	lb, err := readside.New(env.Mongo, pipelinetest.Control).Leaderboard(ctx, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(lb.Top) != 2 || lb.Top[0].UserID != u2.String() || lb.Top[0].Completed != 1 || lb.Top[0].DisplayName != "renamed before the backup" ||
		lb.Top[1].UserID != u1.String() || lb.Top[1].Completed != 0 || lb.Top[1].Total != 0 {
		t.Fatalf("leaderboard = %+v", lb.Top)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx := sharedtest.Context(t, time.Minute)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
}
