package ferret

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/mongoconn"
)

// StartTest starts a FerretDB of the test's own on a free port, backed by a fresh
// PostgreSQL database (see dbtest.NewEmpty) with synchronous_commit off (a test's data
// need not survive a crash of the PostgreSQL server); both go away when the test ends.
// A missing PostgreSQL server fails the test: it never skips. The read model's GIN
// indexes are the caller's: they need the collections, which the test creates (see
// Server.PostgreSQLURL).
func StartTest(t testing.TB) *Server {
	t.Helper()
	dbURL := dbtest.NewEmpty(t)
	// FerretDB's own logs stay off: it logs every duplicate-key answer, which the
	// version-guarded upserts of the read model expect, as an error.
	srv, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", PostgreSQLURL: dbURL, SynchronousCommitOff: true})
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	// Registered after the drop, so it runs before it.
	t.Cleanup(func() { _ = srv.Stop() })
	return srv
}

// Client is a client of the server for the test, disconnected when the test ends.
func (s *Server) Client(t testing.TB) *mongo.Client {
	t.Helper()
	client, err := mongoconn.Connect(context.Background(), s.URI(), mongoconn.Options{AppName: "test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	t.Cleanup(func() { _ = mongoconn.Disconnect(context.Background(), client) })
	return client
}

// GINIndexes maps "<database>.<collection>.<field>" to the name of its GIN expression
// index, for every such index in the server's PostgreSQL database, read from
// PostgreSQL's catalog and FerretDB's metadata tables.
func (s *Server) GINIndexes(t testing.TB) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pg, err := pgx.Connect(ctx, s.PostgreSQLURL())
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	defer pg.Close(context.Background())
	rows, err := pg.Query(ctx, `SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes WHERE indexdef LIKE '% USING gin %'`)
	if err != nil {
		t.Fatalf("ferret: gin indexes: %v", err)
	}
	type ix struct{ schema, table, name, def string }
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ix, error) {
		var x ix
		return x, r.Scan(&x.schema, &x.table, &x.name, &x.def)
	})
	if err != nil {
		t.Fatalf("ferret: gin indexes: %v", err)
	}
	out := map[string]string{}
	for _, x := range all {
		m := jsonbField.FindStringSubmatch(x.def)
		if m == nil {
			t.Fatalf("ferret: GIN index %s is not on a field of _jsonb: %s", x.name, x.def)
		}
		var coll string
		q := fmt.Sprintf(`SELECT _jsonb->>'_id' FROM %s WHERE _jsonb->>'table' = $1`, pgx.Identifier{x.schema, "_ferretdb_database_metadata"}.Sanitize())
		if err := pg.QueryRow(ctx, q, x.table).Scan(&coll); err != nil {
			t.Fatalf("ferret: collection of table %s.%s: %v", x.schema, x.table, err)
		}
		out[x.schema+"."+coll+"."+m[1]] = x.name
	}
	return out
}

var jsonbField = regexp.MustCompile(`\(_jsonb -> '([^']+)'::text\)`)

// ExplainFind is FerretDB's plan of a find, as extended JSON: its queryPlanner holds
// PostgreSQL's EXPLAIN of the SQL FerretDB runs ("Seq Scan", "Bitmap Index Scan" with
// its "Index Name").
func ExplainFind(t testing.TB, db *mongo.Database, coll string, filter bson.D) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var res bson.M
	err := db.RunCommand(ctx, bson.D{{Key: "explain", Value: bson.D{{Key: "find", Value: coll}, {Key: "filter", Value: filter}}}}).Decode(&res)
	if err != nil {
		t.Fatalf("ferret: explain find %v: %v", filter, err)
	}
	b, err := bson.MarshalExtJSON(res["queryPlanner"], false, false)
	if err != nil {
		t.Fatalf("ferret: %v", err)
	}
	return string(b)
}
