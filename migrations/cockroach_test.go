package migrations_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// unsupported is what CockroachDB lacks, or has only in a form that breaks the
// services' guarantees there, that PostgreSQL accepts. Each rule names the files
// allowed to use it (relative to the repository root) and why.
var unsupported = []struct {
	name    string
	re      *regexp.Regexp
	allowed map[string]string
}{
	{
		name: "LISTEN/NOTIFY (CockroachDB has neither)",
		re:   regexp.MustCompile(`(?i)\b(LISTEN|UNLISTEN|NOTIFY)\b|\bpg_notify\s*\(`),
		allowed: map[string]string{
			// Sent only after NotifySupported's probe said yes (OUTBOX_NOTIFY=auto).
			"shared/outbox/notify.go":                  "the probe of the API's wake-up",
			"services/api/internal/postgres/outbox.go": "the API's conditional wake-up",
			// Used only after wake.Probe said yes (WAKE_MODE=auto).
			"services/publisher/internal/outboxdb/outbox_listeners.go": "the publisher's listener and its probe",
		},
	},
	{name: "advisory locks", re: regexp.MustCompile(`(?i)\bpg_(try_)?advisory_(xact_)?(un)?lock`)},
	{name: "LOCK TABLE", re: regexp.MustCompile(`(?i)\bLOCK\s+(TABLE\s+)?\w+\s+IN\s+\w+|\bLOCK\s+TABLE\b`)},
	{name: "triggers, rules and PL/pgSQL", re: regexp.MustCompile(`(?i)\bCREATE\s+(OR\s+REPLACE\s+)?(TRIGGER|RULE|FUNCTION|PROCEDURE)\b|\bLANGUAGE\s+plpgsql\b|^\s*DO\s+\$`)},
	{name: "sequences and SERIAL (not ordered on CockroachDB, and a hot range)", re: regexp.MustCompile(`(?i)\b(SMALL|BIG)?SERIAL\b|\bnextval\s*\(|\bCREATE\s+SEQUENCE\b`)},
	{name: "PostgreSQL MVCC internals", re: regexp.MustCompile(`(?i)\b(xmin|xmax|ctid|txid_current\w*|pg_current_snapshot|pg_snapshot_\w+|pg_xact_status)\b`)},
	{name: "deferrable constraints", re: regexp.MustCompile(`(?i)\bDEFERRABLE\b`)},
	{name: "exclusion constraints", re: regexp.MustCompile(`(?i)\bEXCLUDE\s+USING\b`)},
	{name: "extensions", re: regexp.MustCompile(`(?i)\bCREATE\s+EXTENSION\b`)},
	{name: "unlogged tables", re: regexp.MustCompile(`(?i)\bUNLOGGED\b`)},
	{name: "inheritance and declarative partitions", re: regexp.MustCompile(`(?i)\bINHERITS\b|\bPARTITION\s+OF\b`)},
	{
		name: "maintenance commands", re: regexp.MustCompile(`(?i)^\s*(VACUUM|CLUSTER|REINDEX)\b`),
		allowed: map[string]string{
			// Run only after the Vacuumer found PostgreSQL: CockroachDB collects its own garbage.
			"services/publisher/internal/outboxdb/maintenance.go": "the publisher's outbox vacuum",
		},
	},
	{
		name: "PostgreSQL statistics and lock views", re: regexp.MustCompile(`(?i)\bpg_stat_\w+|\bpg_locks\b`),
		allowed: map[string]string{
			"services/publisher/internal/outboxdb/maintenance.go": "the outbox's dead tuples, read on PostgreSQL only",
		},
	},
}

// skipped are the paths whose SQL never reaches the source of truth in production:
// test helpers (they make and drop the tests' PostgreSQL databases) and the FerretDB
// stand-in's index helper (it tunes FerretDB's own PostgreSQL backend).
var skipped = []string{
	"migrations/dbtest/",
	"services/api/internal/pipelinetest/",
	"services/projector/internal/projtest/",
	"services/publisher/internal/pubtest/",
	"shared/sharedtest/",
	"shared/readmodel/ferretindex/",
}

// sqlStart tells a Go string literal that holds a SQL statement (this code base writes
// SQL keywords in capitals, log messages in lower case).
var sqlStart = regexp.MustCompile(`^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|LISTEN|UNLISTEN|NOTIFY|SET|TRUNCATE|LOCK|DO|COPY|VACUUM|CLUSTER|REINDEX)\b`)

// lineComment strips SQL line comments (migrations explain themselves in them).
var lineComment = regexp.MustCompile(`--[^\n]*`)

type statement struct {
	file string // relative to the repository root, slash-separated
	pos  string
	sql  string
}

// TestSQLRunsOnCockroachDB reads every SQL statement the services send to the source
// of truth (the API's store, the publisher's outboxdb, the shared outbox and postgres
// packages) and every migration, and fails on what CockroachDB lacks. No CockroachDB server can run here,
// so this audit, and keeping to plain tables, indexes and transactions, is how the
// code stays portable; docs/SCALING.md lists the CockroachDB-specific choices.
func TestSQLRunsOnCockroachDB(t *testing.T) {
	t.Parallel()
	stmts := collectSQL(t, "..")
	perArea := map[string]int{}
	for _, s := range stmts {
		for _, area := range []string{"services/api/", "services/publisher/", "shared/outbox/", "migrations/"} {
			if strings.HasPrefix(s.file, area) {
				perArea[area]++
			}
		}
		for _, v := range violations(s) {
			t.Errorf("%s: %s: %s", s.pos, v, oneLine(s.sql))
		}
	}
	for area, least := range map[string]int{
		"services/api/": 10, "services/publisher/": 10, "shared/outbox/": 2, "migrations/": 5,
	} {
		if perArea[area] < least {
			t.Errorf("found %d SQL statements under %s, want at least %d: the audit is not reading it", perArea[area], area, least)
		}
	}
	t.Logf("audited %d statements: %v", len(stmts), perArea)
}

// The rules catch what they are for, and pass the constructs the services rely on.
func TestCockroachRules(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{
		"LISTEN outbox",
		"SELECT pg_notify('outbox', '')",
		"SELECT pg_advisory_xact_lock(42)",
		"SELECT pg_try_advisory_lock($1)",
		"LOCK TABLE outbox IN EXCLUSIVE MODE",
		"CREATE TRIGGER t AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION f()",
		"CREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN END $$",
		"DO $$ BEGIN PERFORM 1; END $$",
		"CREATE TABLE t (id BIGSERIAL PRIMARY KEY)",
		"SELECT nextval('s')",
		"SELECT xmin, * FROM outbox",
		"SELECT pg_current_snapshot()",
		"ALTER TABLE t ADD CONSTRAINT c UNIQUE (a) DEFERRABLE INITIALLY DEFERRED",
		"CREATE TABLE t (r tstzrange, EXCLUDE USING gist (r WITH &&))",
		"CREATE EXTENSION pgcrypto",
		"CREATE UNLOGGED TABLE t (id INT PRIMARY KEY)",
		"CREATE TABLE t2 PARTITION OF t FOR VALUES IN (1)",
		"VACUUM outbox",
		"SELECT count(*) FROM pg_stat_activity",
	} {
		if len(violations(statement{sql: bad})) == 0 {
			t.Errorf("not flagged: %s", bad)
		}
	}
	for _, good := range []string{
		"SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
		"INSERT INTO publisher_leases (partition, expires_at) VALUES ($1, now() + $2::bigint * interval '1 millisecond') ON CONFLICT (partition) DO NOTHING",
		"CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_drain_idx ON outbox (created_at) WHERE published_at IS NULL",
		"DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox WHERE published_at < $1 LIMIT $2) -- LISTEN in a comment",
		"SET LOCAL statement_timeout = 1000",
	} {
		if v := violations(statement{sql: good}); len(v) != 0 {
			t.Errorf("flagged %v: %s", v, good)
		}
	}
}

func violations(s statement) []string {
	sql := lineComment.ReplaceAllString(s.sql, "")
	var out []string
	for _, r := range unsupported {
		if _, ok := r.allowed[s.file]; ok {
			continue
		}
		for _, line := range strings.Split(sql, ";") {
			if r.re.MatchString(line) {
				out = append(out, r.name)
				break
			}
		}
	}
	return out
}

// collectSQL returns the statements of every migration and every SQL string literal of
// the non-test Go files of the services, shared and migrations.
func collectSQL(t *testing.T, root string) []statement {
	t.Helper()
	var out []statement
	fset := token.NewFileSet()
	for _, dir := range []string{"services", "shared", "migrations"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				for _, s := range skipped {
					if rel+"/" == s {
						return filepath.SkipDir
					}
				}
				if d.Name() == "testdata" {
					return filepath.SkipDir
				}
				return nil
			}
			switch {
			case strings.HasSuffix(path, ".sql"):
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				out = append(out, statement{file: rel, pos: rel, sql: string(b)})
			case strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go"):
				f, err := parser.ParseFile(fset, path, nil, 0)
				if err != nil {
					return err
				}
				ast.Inspect(f, func(n ast.Node) bool {
					lit, ok := n.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						return true
					}
					s, err := strconv.Unquote(lit.Value)
					if err == nil && sqlStart.MatchString(s) {
						out = append(out, statement{file: rel, pos: fset.Position(lit.Pos()).String(), sql: s})
					}
					return true
				})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
