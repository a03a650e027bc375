// Package flight runs one call on behalf of every concurrent caller with the same key
// (golang.org/x/sync/singleflight), in a context no single caller can cancel: the
// refreshes of the API's caches (tokens, leaderboard ranking, sync report) are read
// once per miss however many requests wait for them.
package flight

import (
	"context"
	"time"

	"golang.org/x/sync/singleflight"
)

// Group runs calls that return a T. The zero value is ready to use.
type Group[T any] struct {
	g singleflight.Group
}

// Do runs fn once for all the overlapping callers of key and returns its result to
// each. fn runs in a context of its own that keeps ctx's values, ignores its
// cancellation and ends after timeout, so that the caller that started it cannot fail
// the others by going away. A caller whose ctx ends first returns ctx.Err() at once
// and leaves fn running for the rest.
func (g *Group[T]) Do(ctx context.Context, key string, timeout time.Duration, fn func(ctx context.Context) (T, error)) (T, error) {
	ch := g.g.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return fn(fctx)
	})
	var none T
	select {
	case <-ctx.Done():
		return none, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return none, res.Err
		}
		return res.Val.(T), nil
	}
}
