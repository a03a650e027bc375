package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/ceilings"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/driver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/seed"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
)

// seedTo grows the active todos collection to at least size documents: users of
// TodosPerUser todos are seeded into PostgreSQL with their outbox rows, and the
// publisher and the projector carry them into the read model (see backlog, which
// also times the projector on them). keep, when not nil, receives the seeded set.
func (r *runner) seedTo(ctx context.Context, size int, keep *seed.Set) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("before seeding: %w", err)
	}
	before, err := r.todoCount(ctx)
	if err != nil {
		return err
	}
	need := int64(size) - before
	if need <= 0 {
		r.note("the read model held %d todo documents already, %d were asked for: nothing seeded", before, size)
		return nil
	}
	per := int64(r.cfg.TodosPerUser)
	plan := seed.Plan{Users: int((need + per - 1) / per), PerUser: r.cfg.TodosPerUser, CompletedEvery: 4,
		UsersPerTx: max(1, 10000/r.cfg.TodosPerUser)}
	ap := &report.Apply{Label: fmt.Sprintf("seeding %d users of %d todos", plan.Users, plan.PerUser), Kind: event.TodoCreated, DocsBefore: before}
	err = r.backlog(ctx, ap, func(ctx context.Context) (int, error) {
		set, err := seed.Create(ctx, r.pool, plan)
		if keep != nil {
			*keep = set
		}
		return len(set.Users) + len(set.Todos), err
	})
	if err != nil {
		return err
	}
	r.res.Applies = append(r.res.Applies, ap)
	return nil
}

// updates completes seeded todos of the large read model: a backlog of todo.updated
// events, each a version-guarded write of an existing document.
func (r *runner) updates(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("before the updates: %w", err)
	}
	before, err := r.todoCount(ctx)
	if err != nil {
		return err
	}
	if len(r.large.Todos) == 0 {
		return errors.New("the large seed wrote no todos to complete: the read model held LOADGEN_LARGE_TODOS already")
	}
	ap := &report.Apply{Label: fmt.Sprintf("completing %d seeded todos", r.cfg.UpdateTodos), Kind: event.TodoUpdated, DocsBefore: before}
	if err := r.backlog(ctx, ap, func(ctx context.Context) (int, error) {
		return seed.Complete(ctx, r.pool, &r.large, r.cfg.UpdateTodos)
	}); err != nil {
		return err
	}
	r.res.Applies = append(r.res.Applies, ap)
	return nil
}

// backlog times the projector alone on a backlog in its paused durables (see
// pausedBacklog): write puts events into the outbox and returns how many it wrote.
func (r *runner) backlog(ctx context.Context, ap *report.Apply, write func(ctx context.Context) (int, error)) error {
	bt, err := r.pausedBacklog(ctx, r.cfg.ApplyTimeout, write, nil)
	ap.Events, ap.SeedSeconds, ap.PublishSeconds = bt.events, bt.write.Seconds(), bt.publish.Seconds()
	if err != nil {
		return fmt.Errorf("projector on a backlog: %w", err)
	}
	ap.Seconds = bt.apply.Seconds()
	ap.EventsPerSec = float64(ap.Events) / ap.Seconds
	ap.Load1 = load1()
	var cerr error
	ap.DocsAfter, cerr = r.todoCount(ctx)
	r.log.Info("backlog applied", "label", ap.Label, "events", ap.Events, "seconds", ap.Seconds, "events_per_sec", ap.EventsPerSec)
	return cerr
}

// ceilings measures the server's raw ceilings (package ceilings) on the active todos
// collection, with the pipeline idle.
func (r *runner) ceilings(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("the ceilings need an idle server: %w", err)
	}
	todos, err := r.todos(ctx)
	if err != nil {
		return err
	}
	c, err := ceilings.Run(ctx, todos, ceilings.Settings{Inserts: r.cfg.CeilingDocs, Upserts: r.cfg.CeilingUpserts,
		Batch: r.cfg.CeilingBulk, Concurrency: r.cfg.WriteConcurrency, Limit: 2 * time.Minute})
	if err != nil {
		return fmt.Errorf("raw ceilings: %w", err)
	}
	c.Load1 = load1()
	r.res.Ceilings = &c
	return nil
}

// deleteUser creates a user with DeleteTodos todos through the API, waits until the
// read model shows them, deletes the user through the API, and times how long after
// the API's answer the read model shows every todo and the user deleted and their
// stats gone.
func (r *runner) deleteUser(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("before creating the user: %w", err)
	}
	drv := driver.New(r.st.apiURL, stats.NewRecorder(), nil, driver.Mix{}, 30*time.Second)
	defer drv.Close()
	c, err := drv.SignUp(ctx, 0)
	if err != nil {
		return err
	}
	created, err := drv.CreateMany(ctx, c, r.cfg.DeleteTodos, r.cfg.Clients)
	if created < r.cfg.DeleteTodos {
		return fmt.Errorf("created %d of %d todos: %v", created, r.cfg.DeleteTodos, err)
	}
	// The read model itself is looked at once the pipeline shows empty, and again
	// until it shows every todo: /health/sync's report can be up to 1 s old, from
	// before the creates.
	var live int64
	var lerr error
	if err := r.waitSync(ctx, "drained after the creates", r.cfg.ApplyTimeout, 250*time.Millisecond, func(s syncState) bool {
		if o, p := s.backlog(); o > 0 || p > 0 {
			return false
		}
		live, lerr = r.liveTodos(ctx, c.ID)
		return lerr == nil && live == int64(created)
	}); err != nil {
		return fmt.Errorf("%w: the read model shows %d of the user's %d todos before the delete (%v)", err, live, created, lerr)
	}

	res := &report.DeleteUser{Todos: created}
	r.res.DeleteUser = res
	start := time.Now()
	if err := drv.DeleteUser(ctx, c); err != nil {
		return err
	}
	acked := time.Now()
	res.DeleteMS = float64(acked.Sub(start).Microseconds()) / 1000
	// The read model is checked once the pipeline is empty: a check costs FerretDB a
	// read of the user's todos, too much to repeat every 100 ms beside the projector.
	var gone error
	err = r.waitSync(ctx, "converged", r.cfg.DeleteTimeout, 100*time.Millisecond, func(s syncState) bool {
		if o, p := s.backlog(); o > 0 || p > 0 {
			return false
		}
		gone = r.userGone(ctx, c.ID)
		return gone == nil
	})
	res.ConvergeSec = time.Since(acked).Seconds()
	res.Load1 = load1()
	if err != nil {
		return fmt.Errorf("%w: %v", err, gone)
	}
	res.Converged = true
	return nil
}

// liveTodos counts the user's todos that are not tombstones.
func (r *runner) liveTodos(ctx context.Context, userID string) (int64, error) {
	coll, err := r.todos(ctx)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := coll.CountDocuments(ctx, bson.D{{Key: "user_id", Value: userID}, readmodel.NotDeleted})
	if err != nil {
		return 0, fmt.Errorf("count the todos of %s: %w", userID, err)
	}
	return n, nil
}

// userGone says why the read model does not show the user deleted yet (nil: it does):
// a live todo, a live user document, or stats a reader would still see.
func (r *runner) userGone(ctx context.Context, userID string) error {
	live, err := r.liveTodos(ctx, userID)
	if err != nil {
		return err
	}
	if live > 0 {
		return fmt.Errorf("%d todos still live", live)
	}
	db, err := r.activeDB(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, c := range []struct{ coll, live string }{
		{readmodel.CollUsers, "the user document is still live"},
		{readmodel.CollStats, "the user's stats are still shown"},
	} {
		n, err := db.Collection(c.coll).CountDocuments(ctx, bson.D{{Key: "_id", Value: userID}, readmodel.NotDeleted})
		if err != nil {
			return fmt.Errorf("count %s of %s: %w", c.coll, userID, err)
		}
		if n > 0 {
			return errors.New(c.live)
		}
	}
	return nil
}

// rebuild times `projector rebuild` of the whole stream into a fresh database, with
// the pipeline idle.
func (r *runner) rebuild(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		r.note("before the rebuild: %v", err)
	}
	s, err := r.st.sync(ctx)
	if err != nil {
		return err
	}
	rb := &report.Rebuild{StreamMessages: s.Stream.Messages}
	r.res.Rebuild = rb
	const settle = time.Second // the live projector is idle: nothing to settle
	target := "bench_rebuild_" + time.Now().UTC().Format("150405")
	cmd := exec.CommandContext(ctx, filepath.Join(r.cfg.BinDir, "projector"), "rebuild",
		"--database", target, "--timeout", r.cfg.RebuildTimeout.String(), "--settle", settle.String())
	cmd.Env = append(os.Environ(), "DATABASE_URL="+r.st.dbURL, "NATS_URL="+r.st.natsURL, "MONGODB_URI="+r.st.mongoURI,
		"FERRETDB_POSTGRESQL_URL="+r.st.ferretURL, "WRITE_CONCURRENCY="+strconv.Itoa(r.cfg.WriteConcurrency),
		"ADMIN_ADDR=127.0.0.1:0", "LOG_LEVEL=info")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	rb.WallSeconds, rb.Load1 = wall.Seconds(), load1()
	if werr := os.WriteFile(filepath.Join(r.raw, "rebuild.log"), out, 0o644); werr != nil {
		r.log.Warn("rebuild log", "error", werr)
	}
	if sec, ok := catchUpSeconds(out); ok {
		rb.Seconds, rb.TimedBy = sec, "its own log's catch-up time"
	} else {
		rb.Seconds, rb.TimedBy = (wall - settle).Seconds(), "the process's wall time minus the settle"
	}
	var cerr error
	rb.Aggregates, rb.StatsDocs, cerr = r.documents(ctx, target)
	rb.PerSec = float64(rb.Aggregates) / rb.Seconds
	if err != nil {
		rb.Error = fmt.Sprintf("%v: %s", err, lastLine(out))
		return fmt.Errorf("projector rebuild: %s (it wrote %d aggregates)", rb.Error, rb.Aggregates)
	}
	if cerr != nil {
		return cerr
	}
	rb.Complete = true
	return nil
}

// documents counts the aggregates (users and todos) and stats documents of a
// read-model database.
func (r *runner) documents(ctx context.Context, database string) (aggregates, statsDocs int64, _ error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	count := func(coll string) (int64, error) {
		n, err := r.mongo.Database(database).Collection(coll).EstimatedDocumentCount(ctx)
		if err != nil {
			return 0, fmt.Errorf("count %s.%s: %w", database, coll, err)
		}
		return n, nil
	}
	for _, c := range []string{readmodel.CollUsers, readmodel.CollTodos} {
		n, err := count(c)
		if err != nil {
			return aggregates, 0, err
		}
		aggregates += n
	}
	statsDocs, err := count(readmodel.CollStats)
	return aggregates, statsDocs, err
}

// catchUpSeconds finds the rebuild's "rebuild caught up" log record and its seconds.
func catchUpSeconds(out []byte) (float64, bool) {
	for _, line := range bytes.Split(out, []byte("\n")) {
		var rec struct {
			Msg     string  `json:"msg"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "rebuild caught up" && rec.Seconds > 0 {
			return rec.Seconds, true
		}
	}
	return 0, false
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
