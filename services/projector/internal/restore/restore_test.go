package restore_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/restore"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// The restore as it happens: the database is dumped, more is written, published and
// projected, the dump is restored, and the cut-over runs. New writes then reuse the
// versions of the lost timeline with other content, and the read model equals the
// restored source (verify clean, leaderboard right): a user deleted before the backup
// keeps their last stats, and a write the backup held unpublished, which the lost
// timeline had published under the same event id, is published again.
func TestRestoreCutover(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	pool, dbURL := dbtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := restore.Config{Stream: env.Stream, MembersBucket: env.GroupConfig("projector", "a").Bucket}

	w := projtest.NewWorld(t)
	u1, u2, u3 := w.CreateUser(), w.CreateUser(), w.CreateUser()
	a, b := w.CreateTodo(u1, "a"), w.CreateTodo(u2, "b")
	w.CreateTodo(u3, "c")
	w.SetCompleted(b, true)
	w.DeleteUser(u3)
	sent := commit(t, pool, w, 0)
	env.RelayOutbox(t, pool)
	member := env.StartMember(t, env.GroupConfig("projector", "a"))
	projtest.Eventually(t, time.Minute, env.Converged(w))
	w.RenameUser(u2, "renamed before the backup")
	sent = commit(t, pool, w, sent)

	dump := filepath.Join(t.TempDir(), "backup.dump")
	run(t, "pg_dump", "--format=custom", "--file="+dump, "--dbname="+dbURL)
	saved, savedSent := w.Clone(), sent

	// The lost timeline.
	w.RenameUser(u1, "lost name")
	w.SetCompleted(a, true)
	w.CreateTodo(u2, "lost todo")
	commit(t, pool, w, sent)
	env.RelayOutbox(t, pool)
	projtest.Eventually(t, time.Minute, env.Converged(w))

	restoredURL := dbtest.NewEmpty(t)
	run(t, "pg_restore", "--no-owner", "--dbname="+restoredURL, dump)
	restored, err := pgxpool.New(ctx, restoredURL)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	w, sent = saved, savedSent

	if _, err := restore.Run(ctx, cfg, restored, restored, env.JS, env.Store); !errors.Is(err, restore.ErrLive) {
		t.Fatalf("cut-over with a projector running: %v, want ErrLive", err)
	}
	member.Stop()
	if _, err := restored.Exec(ctx, `INSERT INTO publisher_replicas (replica_id, expires_at) VALUES ('p1', now() + interval '1 minute')`); err != nil {
		t.Fatal(err)
	}
	if _, err := restore.Run(ctx, cfg, restored, restored, env.JS, env.Store); !errors.Is(err, restore.ErrLive) {
		t.Fatalf("cut-over with a publisher running: %v, want ErrLive", err)
	}
	if _, err := restored.Exec(ctx, `DELETE FROM publisher_replicas`); err != nil {
		t.Fatal(err)
	}
	// The active database is the control database, which holds the dead letters: they
	// are counted, not dropped with it unseen.
	if _, err := env.Store.Control().Collection(readmodel.CollDeadLetters).InsertOne(ctx,
		readmodel.DeadLetter{ID: env.Stream + ":999999", Stream: env.Stream, StreamSeq: 999999, Error: "lost timeline"}); err != nil {
		t.Fatal(err)
	}
	rep, err := restore.Run(ctx, cfg, restored, restored, env.JS, env.Store)
	if err != nil {
		t.Fatal(err)
	}
	// u1, u2 (its rename is pending in the outbox), a and b; u3 deleted.
	if rep.StreamAbsent || rep.StreamMessages == 0 || rep.Database != env.Control || rep.DeadLetters != 1 || rep.Resync.Emitted != 3 || rep.Resync.Pending != 1 ||
		rep.Resync.Tombstones != 0 || rep.DeletedUsers != 1 {
		t.Fatalf("report = %+v", rep)
	}
	env.Database(t, rep.Database) // as the projector does at start

	w.RenameUser(u1, "renamed after the restore") // version 2, as "lost name"
	w.DeleteTodo(a)                               // version 2, as the lost completion
	commit(t, restored, w, sent)
	env.RelayOutbox(t, restored)
	env.StartMember(t, env.GroupConfig("projector", "b"))
	projtest.Eventually(t, time.Minute, env.Converged(w))
	db, err := env.Store.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := verify.Run(ctx, restored, db)
	if err != nil || len(diffs) > 0 {
		t.Fatalf("verify after the cut-over: %v, %v", diffs, err)
	}
	lb := projtest.Leaderboard(t, db)
	if len(lb) != 2 || lb[0].UserID != u2.String() || lb[0].Completed != 1 || lb[0].DisplayName != "renamed before the backup" ||
		lb[1].UserID != u1.String() || lb[1].Completed != 0 || lb[1].Total != 0 {
		t.Fatalf("leaderboard = %+v", lb)
	}
}

// commit writes the world's state as the source of truth and the outbox rows of its
// events from sent on, as the API's transactions would have; it returns the events
// written so far.
func commit(t *testing.T, pool *pgxpool.Pool, w *projtest.World, sent int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM todos; DELETE FROM users; DELETE FROM user_stats`)
		return err
	})
	if err == nil {
		err = w.WriteSource(ctx, pool)
	}
	if err == nil {
		err = postgres.WithTx(ctx, pool, func(tx pgx.Tx) error { return outbox.Insert(ctx, tx, w.Events[sent:]...) })
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(w.Events)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = os.Stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
}
