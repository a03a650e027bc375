package process

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"
)

// Task is one long-running part of a service: an HTTP server (Serve), the admin
// server, a background loop. Run works until its context ends and then returns nil;
// an error means the service cannot go on.
type Task struct {
	Name string
	Run  func(ctx context.Context) error
}

// RunTasks runs every task at once and returns when all have returned. The first task
// to fail cancels the context of the others, as the end of ctx does; a task that
// returns nil ends alone (a loop the database does not support, say) and stops nothing.
// The result joins the error of every failed task, each prefixed with its name, in the
// order of tasks; it is nil when none failed.
func RunTasks(ctx context.Context, tasks ...Task) error {
	g, gctx := errgroup.WithContext(ctx)
	errs := make([]error, len(tasks))
	for i, t := range tasks {
		g.Go(func() error {
			if err := t.Run(gctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", t.Name, err)
			}
			return errs[i]
		})
	}
	_ = g.Wait() // the first of errs, which are all returned below
	return errors.Join(errs...)
}

// Every calls fn every interval, the first time one interval from now, until ctx ends,
// and returns then. fn runs on the caller's goroutine: a call that outlasts the
// interval delays the next one, and the ticks missed meanwhile are dropped, not
// queued.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
