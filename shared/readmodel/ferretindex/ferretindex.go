// Package ferretindex gives a read model stored in FerretDB v1 (PostgreSQL backend) the
// indexes that FerretDB itself cannot make useful, and the PostgreSQL setting without
// which FerretDB's queries stop using them. Real MongoDB needs none of this.
//
// FerretDB turns a top-level equality filter into `_jsonb->$1 @> $2` on the
// collection's backing table, but the indexes it creates are btree indexes, which `@>`
// cannot use: every lookup, filtered update and upsert scans the whole table. A GIN
// expression index on `(_jsonb->'field')` serves `@>`, and PostgreSQL then answers
// those queries with a Bitmap Index Scan (see the brief, "The MongoDB stand-in,
// measured", and docs/DEPLOYMENT.md for the numbers).
//
// Only a plan made for the actual field name matches the index's expression. FerretDB
// runs its queries as prepared statements, and after five executions PostgreSQL may
// switch a statement to a generic plan, in which the field is still the parameter $1:
// that plan can only scan the table, and on a table that was small or unindexed when
// the switch happened it stays so for the life of the connection. CustomPlans
// (plan_cache_mode = force_custom_plan, set as the database's default) keeps every
// execution on a plan for its values, at a planning cost of tens of microseconds.
//
// FerretDB does not know these indexes (listIndexes does not show them) and they go
// with the table when the collection is dropped, so Ensure is meant to run whenever
// the collections may be new: at projector start and after a rebuild creates its
// database. It is idempotent.
//
// The package keeps pgx out of package readmodel, which the API imports too.
package ferretindex

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Field is one field of a collection that the services filter on by equality.
type Field struct {
	Collection string
	Field      string
}

// ReadModelFields are the equality-filtered fields of a read-model database: every
// document is written and read by _id; todos are also selected by owner.
var ReadModelFields = []Field{
	{readmodel.CollUsers, "_id"},
	{readmodel.CollTodos, "_id"},
	{readmodel.CollTodos, "user_id"},
	{readmodel.CollStats, "_id"},
	{readmodel.CollProjection, "_id"},
}

// ControlFields are the equality-filtered fields of the control database.
var ControlFields = []Field{
	{readmodel.CollPointer, "_id"},
	{readmodel.CollDeadLetters, "_id"},
}

// Setting is a PostgreSQL run-time parameter and its value.
type Setting struct{ Name, Value string }

// CustomPlans keeps FerretDB's prepared statements on plans that can use the GIN
// indexes (see the package comment).
var CustomPlans = Setting{"plan_cache_mode", "force_custom_plan"}

// Index is one GIN index Ensure keeps.
type Index struct {
	Schema string // FerretDB's schema: the MongoDB database name
	Table  string // FerretDB's backing table of the collection
	Name   string
	Field  string
}

// Report is what Ensure found and did.
type Report struct {
	// Indexes are the GIN indexes, whether created now or before.
	Indexes []Index
	// CustomPlansSet is true when Ensure has just made CustomPlans the database's
	// default. Connections FerretDB opened before keep their old mode until they are
	// replaced: restart FerretDB once.
	CustomPlansSet bool
}

// Log reports r: the indexes at info, and a warning when FerretDB needs a restart.
func (r Report) Log(log *slog.Logger) {
	names := make([]string, len(r.Indexes))
	for i, ix := range r.Indexes {
		names[i] = ix.Schema + "." + ix.Name
	}
	log.Info("ferretdb gin indexes in place", "indexes", names)
	if r.CustomPlansSet {
		log.Warn("plan_cache_mode = force_custom_plan is now the default of FerretDB's PostgreSQL database; restart FerretDB once, or its open connections may keep ignoring the indexes")
	}
}

// EnsureAll gives a read model every index it needs before its first write: the
// read model's own (readmodel.EnsureIndexes, on readModel and control) and, when
// postgresqlURL is set, that is on a FerretDB v1 read model, FerretDB's GIN indexes
// (Ensure), whose report it logs. Against MongoDB postgresqlURL is empty.
func EnsureAll(ctx context.Context, postgresqlURL string, readModel, control *mongo.Database, log *slog.Logger) error {
	if err := readmodel.EnsureIndexes(ctx, readModel, control); err != nil || postgresqlURL == "" {
		return err
	}
	rep, err := Ensure(ctx, postgresqlURL, readModel, control)
	if err != nil {
		return err
	}
	rep.Log(log)
	return nil
}

// Ensure makes CustomPlans the default of the PostgreSQL database at postgresqlURL
// (the one FerretDB stores its data in) and creates there a GIN index for each of
// ReadModelFields in readModel and each of ControlFields in control (the same database
// is fine: without a rebuild the control database is also the read model). A
// collection that does not exist yet is created first, through FerretDB, so that its
// backing table exists. The user of postgresqlURL must own FerretDB's database, as
// FerretDB's own user does.
//
// CREATE INDEX blocks writes to that one table while it builds: instant on a new
// collection, seconds on one of 100,000 documents. Give ctx a deadline that allows for
// that; every statement runs under it.
func Ensure(ctx context.Context, postgresqlURL string, readModel, control *mongo.Database) (Report, error) {
	var rep Report
	pool, err := postgres.Connect(ctx, postgresqlURL, postgres.PoolConfig{MaxConns: 1, AppName: "ferretindex"})
	if err != nil {
		return rep, fmt.Errorf("ferretdb indexes: %w", err)
	}
	defer pool.Close()
	// A new session shows the database's default.
	var mode string
	if err := pool.QueryRow(ctx, `SELECT current_setting($1)`, CustomPlans.Name).Scan(&mode); err != nil {
		return rep, fmt.Errorf("read %s: %w", CustomPlans.Name, err)
	}
	if mode != CustomPlans.Value {
		if err := SetDatabaseDefaults(ctx, pool, CustomPlans); err != nil {
			return rep, err
		}
		rep.CustomPlansSet = true
	}
	for _, set := range []struct {
		db     *mongo.Database
		fields []Field
	}{{readModel, ReadModelFields}, {control, ControlFields}} {
		for _, f := range set.fields {
			ix, err := ensure(ctx, pool, set.db, f)
			if err != nil {
				return rep, err
			}
			rep.Indexes = append(rep.Indexes, ix)
		}
	}
	return rep, nil
}

// SetDatabaseDefaults makes each setting the default of every new session of the
// database db is connected to (ALTER DATABASE ... SET).
func SetDatabaseDefaults(ctx context.Context, db postgres.DBTX, settings ...Setting) error {
	var name string
	if err := db.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
		return fmt.Errorf("current database: %w", err)
	}
	for _, s := range settings {
		// Neither names nor values of ALTER DATABASE can be parameters.
		q := fmt.Sprintf(`ALTER DATABASE %s SET %s = %s`, pgx.Identifier{name}.Sanitize(), pgx.Identifier{s.Name}.Sanitize(), quoteLiteral(s.Value))
		if _, err := db.Exec(ctx, q); err != nil {
			return fmt.Errorf("set %s of database %s: %w", s.Name, name, err)
		}
	}
	return nil
}

func ensure(ctx context.Context, db postgres.DBTX, mdb *mongo.Database, f Field) (Index, error) {
	ix := Index{Schema: mdb.Name(), Field: f.Field}
	if err := createCollection(ctx, mdb, f.Collection); err != nil {
		return ix, err
	}
	// The metadata table maps each collection to its table (a sanitized name plus a
	// hash); its schema is the database name.
	q := fmt.Sprintf(`SELECT _jsonb->>'table' FROM %s WHERE _jsonb->>'_id' = $1`,
		pgx.Identifier{ix.Schema, "_ferretdb_database_metadata"}.Sanitize())
	if err := db.QueryRow(ctx, q, f.Collection).Scan(&ix.Table); err != nil {
		return ix, fmt.Errorf("ferretdb table of %s.%s: %w", ix.Schema, f.Collection, err)
	}
	ix.Name = ix.Table + "_" + nonWord.ReplaceAllString(f.Field, "_") + "_gin"
	// Expressions and names cannot be parameters: the field goes in as a quoted literal.
	q = fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s USING gin ((_jsonb->%s))`,
		pgx.Identifier{ix.Name}.Sanitize(), pgx.Identifier{ix.Schema, ix.Table}.Sanitize(), quoteLiteral(f.Field))
	_, err := db.Exec(ctx, q)
	// Two processes creating the same index at once: one of them loses the race on
	// the catalog's unique name and gets 23505 or 42P07; the index exists either way.
	if err != nil && postgres.SQLState(err) != "23505" && postgres.SQLState(err) != "42P07" {
		return ix, fmt.Errorf("create index %s on %s.%s (%s): %w", ix.Name, ix.Schema, f.Collection, f.Field, err)
	}
	return ix, nil
}

var nonWord = regexp.MustCompile(`[^a-z0-9_]`)

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// codeNamespaceExists is MongoDB's (and FerretDB's) answer to creating a collection
// that exists.
const codeNamespaceExists = 48

func createCollection(ctx context.Context, db *mongo.Database, name string) error {
	err := db.CreateCollection(ctx, name)
	var ce mongo.CommandError
	if err == nil || (errors.As(err, &ce) && ce.Code == codeNamespaceExists) {
		return nil
	}
	return fmt.Errorf("create collection %s.%s: %w", db.Name(), name, err)
}
