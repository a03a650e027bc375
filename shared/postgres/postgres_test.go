package postgres_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// things makes a table of numbers below 100 in a database of its own, and returns
// its pool and a count of its rows.
func things(t *testing.T) (*pgxpool.Pool, func() int) {
	t.Helper()
	pool, _ := dbtest.NewPool(t)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE things (n INT PRIMARY KEY CHECK (n < 100))`); err != nil {
		t.Fatal(err)
	}
	return pool, func() int {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM things`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}

func TestWithTx(t *testing.T) {
	t.Parallel()
	pool, count := things(t)
	ctx := context.Background()

	t.Run("commits", func(t *testing.T) {
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO things VALUES (1)`)
			return err
		})
		if err != nil || count() != 1 {
			t.Fatalf("err = %v, rows = %d, want nil and 1", err, count())
		}
	})

	t.Run("rolls back when fn fails", func(t *testing.T) {
		boom := errors.New("boom")
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO things VALUES (2)`); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || count() != 1 {
			t.Fatalf("err = %v, rows = %d, want boom and 1", err, count())
		}
	})

	t.Run("rolls back when the context is cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		err := postgres.WithTx(cctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(cctx, `INSERT INTO things VALUES (3)`); err != nil {
				return err
			}
			cancel()
			return cctx.Err()
		})
		if !errors.Is(err, context.Canceled) || count() != 1 {
			t.Fatalf("err = %v, rows = %d, want context.Canceled and 1", err, count())
		}
		// The pool must still hand out working connections afterwards.
		if err := pool.Ping(ctx); err != nil {
			t.Fatalf("ping after cancelled tx: %v", err)
		}
	})

	t.Run("retries a serialization failure", func(t *testing.T) {
		calls := 0
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			calls++
			if _, err := tx.Exec(ctx, `INSERT INTO things VALUES (4)`); err != nil {
				return err
			}
			if calls == 1 {
				// A real server error carrying SQLSTATE 40001, as CockroachDB sends
				// when it asks the client to retry.
				_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'retry me' USING ERRCODE = '40001'; END $$`)
				return err
			}
			return nil
		})
		if err != nil || calls != 2 || count() != 2 {
			t.Fatalf("err = %v, calls = %d, rows = %d; want nil, 2, 2", err, calls, count())
		}
	})

	t.Run("reports unique violations by constraint", func(t *testing.T) {
		_, err := pool.Exec(ctx, `INSERT INTO things VALUES (1)`)
		if !postgres.IsUniqueViolation(err, "things_pkey") || !postgres.IsUniqueViolation(err, "") {
			t.Fatalf("IsUniqueViolation(%v) = false", err)
		}
		if postgres.IsUniqueViolation(err, "other_key") {
			t.Fatal("IsUniqueViolation matched another constraint")
		}
		if got := postgres.SQLState(err); got != "23505" {
			t.Fatalf("SQLState = %q", got)
		}
	})
}

func TestRedact(t *testing.T) {
	t.Parallel()
	got := postgres.Redact("postgres://app:s3cret@db:5432/todo")
	if got != "postgres://app:xxxxx@db:5432/todo" {
		t.Fatalf("Redact = %q", got)
	}
}

func TestNoJIT(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, url := dbtest.NewPool(t)
	for _, noJIT := range []bool{false, true} {
		pool, err := postgres.Connect(ctx, url, postgres.PoolConfig{MaxConns: 2, NoJIT: noJIT})
		if err != nil {
			t.Fatal(err)
		}
		var jit, server string
		err = pool.QueryRow(ctx, `SELECT current_setting('jit'), (SELECT reset_val FROM pg_settings WHERE name = 'jit')`).Scan(&jit, &server)
		pool.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := server
		if noJIT {
			want = "off"
		}
		if jit != want {
			t.Errorf("NoJIT %v: jit = %s, want %s", noJIT, jit, want)
		}
	}
}

// WithBatch's statements are one implicit transaction: all of them or none.
func TestWithBatch(t *testing.T) {
	t.Parallel()
	pool, count := things(t)
	ctx := context.Background()
	batch := func(ns ...int) func() (*pgx.Batch, error) {
		return func() (*pgx.Batch, error) {
			b := &pgx.Batch{}
			for _, n := range ns {
				b.Queue(`INSERT INTO things VALUES ($1)`, n)
			}
			return b, nil
		}
	}

	if err := postgres.WithBatch(ctx, pool, batch(1, 2, 3)); err != nil || count() != 3 {
		t.Fatalf("err = %v, rows = %d, want nil and 3", err, count())
	}
	// The last statement fails on the server: the two before it are rolled back with
	// it, and the outcome is known.
	err := postgres.WithBatch(ctx, pool, batch(4, 5, 100))
	if !postgres.IsCheckViolation(err, "things_n_check") || postgres.IsCheckViolation(err, "other_check") || errors.Is(err, postgres.ErrCommitUnknown) || count() != 3 {
		t.Fatalf("err = %v, rows = %d, want a check violation and 3", err, count())
	}
	// A build that fails sends nothing.
	builds := 0
	boom := errors.New("boom")
	err = postgres.WithBatch(ctx, pool, func() (*pgx.Batch, error) { builds++; return nil, boom })
	if !errors.Is(err, boom) || builds != 1 || count() != 3 {
		t.Fatalf("err = %v, builds = %d, rows = %d", err, builds, count())
	}
	// A database that cannot be reached is a failure, not an unknown outcome.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := postgres.WithBatch(cctx, pool, batch(6)); err == nil || errors.Is(err, postgres.ErrCommitUnknown) {
		t.Fatalf("with a cancelled context: err = %v, want a known failure", err)
	}
}
