package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// setBackendConnections lets FerretDB's PostgreSQL database accept connections or
// not; refusing also ends the ones it holds, as a restart of PostgreSQL does.
func setBackendConnections(t *testing.T, env *projtest.Env, allow bool) {
	t.Helper()
	u, err := url.Parse(env.Ferret.PostgreSQLURL())
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Trim(u.Path, "/")
	admin := os.Getenv("TEST_DATABASE_URL")
	if admin == "" {
		admin = dbtest.DefaultAdminURL
	}
	ctx := sharedtest.Context(t, 15*time.Second)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// Identifiers cannot be parameters; name is test_<hex>, made by dbtest.NewEmpty.
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS %t", pgx.Identifier{name}.Sanitize(), allow)); err != nil {
		t.Fatal(err)
	}
	if !allow {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name); err != nil {
			t.Fatal(err)
		}
	}
}

// ferretPG connects to FerretDB's own PostgreSQL database, where each MongoDB database
// is a schema and each collection a table.
func ferretPG(t *testing.T, env *projtest.Env) *pgx.Conn {
	t.Helper()
	ctx := sharedtest.Context(t, 15*time.Second)
	conn, err := pgx.Connect(ctx, env.Ferret.PostgreSQLURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// backingTable connects to FerretDB's PostgreSQL database and names, quoted, the table
// that holds collection coll of database db, creating the collection first so that the
// table exists.
func backingTable(t *testing.T, env *projtest.Env, db, coll string) (*pgx.Conn, string) {
	t.Helper()
	conn := ferretPG(t, env)
	ctx := sharedtest.Context(t, 15*time.Second)
	var ce mongo.CommandError
	if err := env.Mongo.Database(db).CreateCollection(ctx, coll); err != nil && !(errors.As(err, &ce) && ce.Code == 48) { // 48: NamespaceExists
		t.Fatal(err)
	}
	var table string
	q := fmt.Sprintf(`SELECT _jsonb->>'table' FROM %s WHERE _jsonb->>'_id' = $1`, pgx.Identifier{db, "_ferretdb_database_metadata"}.Sanitize())
	if err := conn.QueryRow(ctx, q, coll).Scan(&table); err != nil {
		t.Fatalf("table of %s.%s: %v", db, coll, err)
	}
	return conn, pgx.Identifier{db, table}.Sanitize()
}

// lockCollection makes every read and write of a collection wait, as a server too
// slow to answer within a batch's deadline would, until unlock is called (or the
// test ends). waiting reports whether a statement is waiting for the lock.
func lockCollection(t *testing.T, env *projtest.Env, db, coll string) (waiting func() bool, unlock func()) {
	t.Helper()
	conn, table := backingTable(t, env, db, coll)
	ctx := sharedtest.Context(t, 15*time.Second)
	// The transaction outlives ctx: a deadline only applies to the statements.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	unlock = undo(t, tx.Rollback)
	observer := ferretPG(t, env)
	waiting = func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var n int
		if err := observer.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE relation = $1::regclass AND NOT granted`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	return waiting, unlock
}

// undo returns a function that runs f once, within 15 s, and reports its error; the
// end of the test calls it too.
func undo(t *testing.T, f func(context.Context) error) func() {
	var once sync.Once
	u := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := f(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(u)
	return u
}

// failWrites makes every insert and update of a collection fail, with the error
// FerretDB passes on from its backend, until restore is called (or the test ends).
// attempts counts the writes refused.
func failWrites(t *testing.T, env *projtest.Env, db, coll string) (attempts func() int64, restore func()) {
	t.Helper()
	conn, table := backingTable(t, env, db, coll)
	ctx := sharedtest.Context(t, 15*time.Second)
	// A sequence, because nextval survives the rollback of the refused write.
	for _, q := range []string{
		`CREATE SEQUENCE test_refused_writes`,
		`CREATE FUNCTION test_refuse_write() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN PERFORM nextval('test_refused_writes'); RAISE EXCEPTION 'test: writes refused'; END $$`,
		`CREATE TRIGGER test_refuse_write BEFORE INSERT OR UPDATE ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION test_refuse_write()`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	restore = undo(t, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, `DROP TRIGGER test_refuse_write ON `+table)
		return err
	})
	attempts = func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var n int64
		if err := conn.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_refused_writes`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	return attempts, restore
}

// FerretDB's PostgreSQL backend goes away while FerretDB itself keeps answering, with
// InternalError to every command. That is an outage: held, then applied, never
// dead-lettered (the fault runner found it naked towards the dead letters).
func TestReadModelBackendOutageNotDeadLettered(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	outageConverges(t, env, "a backend outage", func() {
		setBackendConnections(t, env, false)
		t.Cleanup(func() { setBackendConnections(t, env, true) })
	}, func() {
		setBackendConnections(t, env, true)
	})
}

// Two replicas: one applies everything while the other stands by; when the active one
// stops, the standby takes over (after AckWait) and the read model converges.
func TestOneReplicaActiveStandbyTakesOver(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := simpleWorld(t, 3, 3)
	env.Publish(t, w.Events...)
	cfg := env.ConsumerConfig("projector")
	cfg.AckWait = 3 * time.Second
	a, b := env.Start(t, cfg), env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))

	handled := func(r *projtest.Replica) float64 {
		return testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeApplied)) +
			testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeStale))
	}
	active, standby := a, b
	if handled(a) == 0 {
		active, standby = b, a
	}
	if handled(active) == 0 || handled(standby) != 0 {
		t.Fatalf("replicas handled %v and %v events: want one active, one idle", handled(a), handled(b))
	}

	active.Stop()
	before := len(w.Events)
	u := w.CreateUser()
	w.CreateTodo(u, "after the takeover")
	env.Publish(t, w.Events[before:]...)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	if handled(standby) == 0 {
		t.Fatal("the standby handled nothing after the active replica stopped")
	}
}
