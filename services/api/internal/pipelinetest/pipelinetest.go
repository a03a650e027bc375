// Package pipelinetest gives the tests of the write side's operator tools (packages
// verify, resync, restore and todoctl) the rest of the pipeline around the API's
// store: a migrated PostgreSQL database of their own with the store on it, an
// embedded FerretDB and JetStream server, the stream as the publisher creates it, a
// relay that plays the publisher, and the projector itself, built from its source and
// run as a process, as in production. Writer makes the API's writes through the store.
//
// Only tests import it. A package whose tests start the projector runs them through
// Main, which builds the projector once and removes it at the end.
package pipelinetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/verify"
	"github.com/outboxtodo/outboxtodo/shared/event"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// The stream's and the projector's names in the tests: the services' defaults.
const (
	subjectPrefix = event.DefaultSubjectPrefix
	Stream        = "TODO_EVENTS"
	Control       = "todo_read"
	MembersBucket = "projector-members"
	// partitions is the partition count of the test streams.
	partitions = 8
)

// Env is one test's servers and clients.
type Env struct {
	Pool      *pgxpool.Pool
	DBURL     string
	Store     *postgres.Store
	Ferret    *ferret.Server
	Mongo     *mongo.Client
	ReadModel *readmodel.Store
	NATS      *natsserver.Server
	JS        jetstream.JetStream
}

// New starts the servers, creates the stream (newest 100 messages per subject,
// partitioned by owner, like the publisher's) and connects one client to each.
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{Ferret: ferret.StartTest(t), NATS: natsserver.NewTest(t, nil)}
	e.Pool, e.DBURL = dbtest.NewPool(t)
	e.Store = postgres.New(e.Pool, false)
	e.Mongo = e.Ferret.Client(t)
	e.ReadModel = readmodel.NewStore(e.Mongo, Control)
	_, e.JS = natsserver.Connect(t, e.NATS.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name:              Stream,
		Subjects:          []string{event.StreamSubjects(subjectPrefix)},
		SubjectTransform:  event.PartitionTransform(subjectPrefix, partitions),
		MaxMsgsPerSubject: 100,
		Duplicates:        2 * time.Minute,
		Storage:           jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	return e
}

// ToolsEnv points todoctl at env and its source of truth, as an operator's environment
// would.
func (e *Env) ToolsEnv(t *testing.T) {
	t.Helper()
	t.Setenv("DATABASE_URL", e.DBURL)
	t.Setenv("NATS_URL", e.NATS.ClientURL())
	t.Setenv("MONGODB_URI", e.Ferret.URI())
	t.Setenv("MONGODB_DATABASE", Control)
	t.Setenv("STREAM_NAME", Stream)
	t.Setenv("MEMBERS_BUCKET", MembersBucket)
}

// Active is the active read-model database.
func (e *Env) Active(t testing.TB) *mongo.Database {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := e.ReadModel.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// Verified is a condition for sharedtest.Eventually: verify finds the active read
// model equal to store's source of truth.
func (e *Env) Verified(t testing.TB, store *postgres.Store) func() (bool, string) {
	return func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		diffs, err := verify.Run(ctx, store, e.Active(t))
		switch {
		case err != nil:
			return false, err.Error()
		case len(diffs) > 0:
			return false, fmt.Sprintf("%d differences, first: %s", len(diffs), diffs[0])
		}
		return true, ""
	}
}

// Publish publishes events as the publisher does (sharedtest.PublishEvents).
func (e *Env) Publish(t testing.TB, events ...event.Envelope) {
	t.Helper()
	sharedtest.PublishEvents(t, e.JS, subjectPrefix, events...)
}

// Outbox returns the events of every outbox row of db, published or not, oldest
// first.
func Outbox(t testing.TB, db sharedpg.DBTX) []event.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT payload::text FROM outbox ORDER BY created_at, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event.Envelope, error) {
		var payload string
		if err := r.Scan(&payload); err != nil {
			return event.Envelope{}, err
		}
		return event.Decode([]byte(payload))
	})
	if err != nil {
		t.Fatalf("outbox rows: %v", err)
	}
	return events
}

// RelayOutbox plays the publisher once: it publishes every unpublished outbox row of
// db, oldest first, and marks it published where it is, as releases of the publisher
// before outbox_published (migration 00007) did, so that the rows a resync meets
// stay to be seen. It returns how many it relayed.
func (e *Env) RelayOutbox(t testing.TB, db sharedpg.DBTX) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT event_id, payload::text FROM outbox WHERE published_at IS NULL ORDER BY created_at, event_id`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id      uuid.UUID
		payload string
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		return x, r.Scan(&x.id, &x.payload)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		ev, err := event.Decode([]byte(r.payload))
		if err != nil {
			t.Fatalf("outbox row %s: %v", r.id, err)
		}
		e.Publish(t, ev)
		if _, err := db.Exec(ctx, `UPDATE outbox SET published_at = now() WHERE event_id = $1`, r.id); err != nil {
			t.Fatal(err)
		}
	}
	return len(all)
}

// Drained is a condition for sharedtest.Eventually: every consumer of the stream has
// every message delivered and acknowledged, so the projector applied all that was
// published.
func (e *Env) Drained() (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.JS.Stream(ctx, Stream)
	if err != nil {
		return false, err.Error()
	}
	n := 0
	consumers := st.ListConsumers(ctx)
	for ci := range consumers.Info() {
		n++
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			return false, fmt.Sprintf("consumer %s: %d pending, %d unacknowledged", ci.Name, ci.NumPending, ci.NumAckPending)
		}
	}
	if err := consumers.Err(); err != nil {
		return false, err.Error()
	}
	return n > 0, "no consumer yet"
}

// Projector is the projector's run command in a process of its own.
type Projector struct {
	cmd  *exec.Cmd
	done chan error
	once sync.Once
	t    testing.TB
}

// StartProjector runs the projector as member of the partition group, configured
// from the environment as in production, until Stop or the end of the test. It returns
// once the projector is ready: a member of MembersBucket with its consumers created.
func (e *Env) StartProjector(t testing.TB) *Projector {
	t.Helper()
	admin := "127.0.0.1:" + sharedtest.FreePorts(t, 1)[0]
	logs := &sharedtest.LogBuffer{}
	cmd := exec.Command(projectorPath(t))
	cmd.Env = append(os.Environ(),
		"NATS_URL="+e.NATS.ClientURL(), "MONGODB_URI="+e.Ferret.URI(), "MONGODB_DATABASE="+Control,
		"FERRETDB_POSTGRESQL_URL="+e.Ferret.PostgreSQLURL(), "STREAM_NAME="+Stream, "SUBJECT_PREFIX="+subjectPrefix,
		"MEMBERS_BUCKET="+MembersBucket, "MEMBER_TTL=2s", "ADMIN_ADDR="+admin, "FETCH_WAIT=200ms",
		"STATS_INTERVAL=200ms", "LOG_LEVEL=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the projector: %v", err)
	}
	p := &Projector{cmd: cmd, done: make(chan error, 1), t: t}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("projector's log:\n%s", logs.String())
		}
	})
	sharedtest.Eventually(t, time.Minute, func() (bool, string) {
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("the projector exited: %v\n%s", err, logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/readyz", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	return p
}

// Stop is SIGTERM: the projector hands its partitions over and exits, which Stop
// waits for; a failure to stop cleanly fails the test.
func (p *Projector) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				p.t.Errorf("projector: %v", err)
			}
		case <-time.After(time.Minute):
			_ = p.cmd.Process.Kill()
			p.t.Errorf("the projector did not stop within a minute of SIGTERM")
		}
	})
}

// build is the projector binary Main builds for the package's tests.
var build struct {
	dir  string
	once sync.Once
	err  error
}

// projectorPath builds the projector from the workspace, once per test binary.
func projectorPath(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		if build.dir == "" {
			build.err = errors.New("pipelinetest: run the package's tests through pipelinetest.Main (TestMain)")
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		// Not `go run`: SIGTERM must reach the projector itself.
		out, err := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(build.dir, "projector"),
			"github.com/outboxtodo/outboxtodo/services/projector/cmd/projector").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("build the projector: %w\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return filepath.Join(build.dir, "projector")
}

// Main runs the package's tests with a directory for the projector's binary, removed
// at the end. Call it from TestMain.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipelinetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	build.dir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
