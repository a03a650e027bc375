// Package ceilings measures what the MongoDB server itself does with the projector's
// own kinds of write, on the active read model's todos collection (so with its size and
// its indexes, the FerretDB GIN indexes included): unordered insertMany of new
// documents in batches, one batch at a time and Concurrency at a time, then
// version-guarded single upserts of existing documents, one at a time and Concurrency
// at a time. The documents belong to made-up owners and are deleted at the end. Only
// operations the FerretDB stand-in handles are used: it hangs on bulk updates of more
// than about 40 statements, so there are none.
//
// `make bench` runs them in-process with the pipeline idle; cmd/projload runs them on
// their own.
package ceilings

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

// Settings size one run.
type Settings struct {
	// Inserts is the number of new documents per insertMany ceiling, written in
	// batches of Batch; it grows to Upserts when smaller.
	Inserts, Batch int
	// Upserts is the number of guarded upserts of existing documents per upsert
	// ceiling; 0 skips them.
	Upserts int
	// Concurrency is the number of writes in flight in the concurrent ceilings (the
	// projector's WRITE_CONCURRENCY).
	Concurrency int
	// Limit bounds each ceiling, and the deletion at the end.
	Limit time.Duration
}

// MaxInserts keeps the documents of one ceiling round, which FerretDB deletes with one
// statement binding each _id, within PostgreSQL's 65,535 bind parameters.
const MaxInserts = 60000

// Validate checks the ranges a run depends on.
func (s Settings) Validate() error {
	switch {
	case s.Inserts < 0 || s.Upserts < 0:
		return errors.New("ceilings: inserts and upserts must not be negative")
	case s.Batch < 1 || s.Concurrency < 1:
		return errors.New("ceilings: batch and concurrency must be at least 1")
	case max(s.Inserts, s.Upserts) > MaxInserts:
		return fmt.Errorf("ceilings: inserts and upserts at most %d (FerretDB deletes the ceiling's documents in one statement)", MaxInserts)
	}
	return nil
}

// Run counts the documents of todos, then measures the ceilings on it with documents of
// made-up owners, and deletes those afterwards (also when a measurement fails).
// Inserts and Upserts both 0 measure nothing.
func Run(ctx context.Context, todos *mongo.Collection, s Settings) (report.Ceilings, error) {
	out := report.Ceilings{Collection: todos.Database().Name() + "." + todos.Name()}
	if err := s.Validate(); err != nil || s.Inserts == 0 && s.Upserts == 0 {
		return out, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	n, err := todos.EstimatedDocumentCount(cctx)
	cancel()
	if err != nil {
		return out, fmt.Errorf("count %s: %w", out.Collection, err)
	}
	out.CollectionDocs = n
	out.Ceilings, err = measureAll(ctx, todos, s)
	return out, err
}

// measureAll runs the insertMany rounds, then the upsert rounds on their documents.
func measureAll(ctx context.Context, coll *mongo.Collection, s Settings) (_ []report.CeilingRun, err error) {
	// Each insertMany round has an owner of its own, deleted on its own: FerretDB
	// deletes the matches of a filter with one statement that binds every _id, and
	// PostgreSQL binds at most 65,535 parameters (see MaxInserts).
	var owners []string
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Limit)
		defer cancel()
		for _, owner := range owners {
			if _, derr := coll.DeleteMany(dctx, bson.D{{Key: "user_id", Value: owner}}); derr != nil {
				err = errors.Join(err, fmt.Errorf("delete the ceiling's documents: %w", derr))
			}
		}
	}()
	var (
		out    []report.CeilingRun
		rounds [][]string // the ids each insertMany round wrote
	)
	// Each upsert round updates documents of one insertMany round.
	inserts := max(s.Inserts, s.Upserts)
	for _, c := range []int{1, s.Concurrency} {
		owner := uuid.Must(uuid.NewV7()).String()
		owners = append(owners, owner)
		ids := newIDs(inserts)
		rounds = append(rounds, ids)
		cl, err := insertRound(ctx, coll, s, c, owner, ids)
		if err != nil {
			return out, err
		}
		out = append(out, cl)
	}
	if s.Upserts == 0 {
		return out, nil
	}
	for round, c := range []int{1, s.Concurrency} {
		cl, err := upsertRound(ctx, coll, s.Limit, c, owners[round], rounds[round][:s.Upserts])
		if err != nil {
			return out, err
		}
		out = append(out, cl)
	}
	return out, nil
}

// insertRound inserts ids as new documents of owner, in batches of s.Batch, workers at
// a time.
func insertRound(ctx context.Context, coll *mongo.Collection, s Settings, workers int, owner string, ids []string) (report.CeilingRun, error) {
	cl, err := measure(ctx, s.Limit, report.OpInsertMany, workers, len(ids), func(ctx context.Context, worker int) error {
		for i := worker * s.Batch; i < len(ids); i += workers * s.Batch {
			if err := insertBatch(ctx, coll, owner, ids[i:min(i+s.Batch, len(ids))]); err != nil {
				return err
			}
		}
		return nil
	})
	cl.Batch = s.Batch
	return cl, err
}

// upsertRound updates the documents ids of owner with guarded upserts, workers at a
// time.
func upsertRound(ctx context.Context, coll *mongo.Collection, limit time.Duration, workers int, owner string, ids []string) (report.CeilingRun, error) {
	return measure(ctx, limit, report.OpUpsert, workers, len(ids), func(ctx context.Context, worker int) error {
		for i := worker; i < len(ids); i += workers {
			if err := guardedUpsert(ctx, coll, owner, ids[i], 2); err != nil {
				return err
			}
		}
		return nil
	})
}

// measure runs work on workers goroutines (worker 0 to workers-1), bounded by limit,
// and times the whole.
func measure(ctx context.Context, limit time.Duration, op string, workers, docs int, work func(ctx context.Context, worker int) error) (report.CeilingRun, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	errs := make([]error, workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { errs[w] = work(ctx, w) })
	}
	wg.Wait()
	el := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return report.CeilingRun{}, fmt.Errorf("%s ceiling, %d in flight: %w", op, workers, err)
	}
	return report.CeilingRun{Operation: op, Concurrency: workers, Docs: docs, Seconds: el.Seconds(), DocsPerSec: float64(docs) / el.Seconds()}, nil
}

func newIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7()).String()
	}
	return ids
}

func todoDoc(id, owner string, version int64) readmodel.Todo {
	now := time.Now().UTC()
	return readmodel.Todo{ID: id, UserID: owner, Title: "projload ceiling", Priority: "normal", Version: version,
		CreatedAt: now, UpdatedAt: now, ProjectedAt: now}
}

// insertBatch inserts new documents unordered: FerretDB writes them as multi-row
// INSERTs with no lookup.
func insertBatch(ctx context.Context, coll *mongo.Collection, owner string, ids []string) error {
	docs := make([]any, len(ids))
	for i, id := range ids {
		docs[i] = todoDoc(id, owner, 1)
	}
	if _, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)); err != nil {
		return fmt.Errorf("insertMany of %d: %w", len(ids), err)
	}
	return nil
}

// guardedUpsert is the projector's write of an existing document: the filter matches
// only an older version.
func guardedUpsert(ctx context.Context, coll *mongo.Collection, owner, id string, version int64) error {
	_, err := coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "version", Value: bson.D{{Key: "$lt", Value: version}}}},
		bson.D{{Key: "$set", Value: todoDoc(id, owner, version)}}, options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("upsert %s: %w", id, err)
	}
	return nil
}
