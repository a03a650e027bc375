// Package apitest holds the test helpers the API's packages share: a clock moved by
// hand, pools closed with the test (one through a proxy that breaks connections at a
// commit), a fuzz target for the parsers of request bodies, and the module's parsed
// source for the tests that audit it. Only tests import it.
package apitest

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/input"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// Clock is a clock the test moves by hand, safe for concurrent use. Its Now fits the
// Now fields of the packages' configs.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock is a clock that reads start until it is moved.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Pool is a pool on the database at dbURL, closed when the test ends. It connects
// lazily: a database that does not answer fails the pool's first use, not Pool.
func Pool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ProxiedPool is a pool on a fresh, migrated database (dbtest.NewPool) whose
// connections pass through a PGProxy, the proxy, and a direct pool on the same
// database to look at the truth. Both pools close when the test ends.
func ProxiedPool(t testing.TB) (proxied, direct *pgxpool.Pool, proxy *sharedtest.PGProxy) {
	t.Helper()
	direct, dbURL := dbtest.NewPool(t)
	proxiedURL, proxy := sharedtest.ProxyDatabase(t, dbURL)
	return Pool(t, proxiedURL), direct, proxy
}

// FuzzBody fuzzes parse, a parser of request bodies, from seeds: an error it returns
// is never a *input.ValidationError without fields, and check must find valid what it
// accepts.
func FuzzBody[T any](f *testing.F, seeds []string, parse func([]byte) (T, error), check func(t *testing.T, v T)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parse(b)
		if err != nil {
			var ve *input.ValidationError
			if errors.As(err, &ve) && len(ve.Fields) == 0 {
				t.Fatal("validation error without fields")
			}
			return
		}
		check(t, v)
	})
}

// ModuleSource parses every non-test Go file below root, the module's directory,
// testdata left out, grouped by package directory relative to root, for tests that
// check the source itself. A file that does not parse fails the test.
func ModuleSource(t testing.TB, root string) (*token.FileSet, map[string][]*ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	byDir := map[string][]*ast.File{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		dir, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		byDir[dir] = append(byDir[dir], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fset, byDir
}
