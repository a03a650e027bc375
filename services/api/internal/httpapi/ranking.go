package httpapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/flight"
	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// rankingCacheUsers bounds the lines a cached ranking holds (about 100 bytes each); a
// caller ranked beyond them is ranked by a count query of their own.
const rankingCacheUsers = 100000

// rankingRefreshTimeout bounds one refresh, which runs on behalf of every waiting
// caller, so that one caller's cancelled request cannot fail the others.
const rankingRefreshTimeout = 10 * time.Second

// rankings serves leaderboards from a ranking read at most once per ttl and shared by
// every request of the replica: on the FerretDB stand-in the leaderboard query sorts
// every user's stats in memory (issue 10 measured it). The freshness headers come from
// the watermark read just before the ranking, so they never claim more than the
// ranking shows. With ttl 0 every request reads its own.
type rankings struct {
	rm    ReadModel
	ttl   time.Duration
	now   func() time.Time
	group flight.Group[*rankingSnapshot]

	mu   sync.Mutex
	snap *rankingSnapshot
}

type rankingSnapshot struct {
	watermark *readmodel.Watermark // nil before the first applied event
	ranking   *readside.Ranking
	readAt    time.Time // when its read began
}

// get returns a ranking of at least n lines' worth, read within the ttl and begun no
// earlier than notBefore (zero: any time). A ranking the cache cannot serve so is read
// for this caller alone: a shared refresh may have begun before notBefore.
func (c *rankings) get(ctx context.Context, n int, notBefore time.Time) (*rankingSnapshot, error) {
	if c.ttl <= 0 {
		return readRanking(ctx, c.rm, n)
	}
	if snap := c.cached(notBefore); snap != nil {
		return snap, nil
	}
	if !notBefore.IsZero() {
		return readRanking(ctx, c.rm, n)
	}
	return c.group.Do(ctx, "ranking", rankingRefreshTimeout, func(rctx context.Context) (*rankingSnapshot, error) {
		// A refresh that ended between the check above and this one is fresh too.
		if snap := c.cached(time.Time{}); snap != nil {
			return snap, nil
		}
		// The start of the read, not its end: what was applied before it is in it.
		start := c.now()
		snap, err := readRanking(rctx, c.rm, rankingCacheUsers)
		if err != nil {
			return nil, err
		}
		snap.readAt = start
		c.mu.Lock()
		c.snap = snap
		c.mu.Unlock()
		return snap, nil
	})
}

// cached returns the cached ranking while it is younger than the ttl and was begun no
// earlier than notBefore; nil otherwise.
func (c *rankings) cached(notBefore time.Time) *rankingSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap == nil || c.now().Sub(c.snap.readAt) >= c.ttl || c.snap.readAt.Before(notBefore) {
		return nil
	}
	return c.snap
}

func readRanking(ctx context.Context, rm ReadModel, limit int) (*rankingSnapshot, error) {
	snap := &rankingSnapshot{}
	wm, err := rm.Watermark(ctx)
	switch {
	case errors.Is(err, readside.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("%w: watermark: %w", errReadModel, err)
	default:
		snap.watermark = &wm
	}
	if snap.ranking, err = rm.Ranking(ctx, limit); err != nil {
		return nil, fmt.Errorf("%w: leaderboard: %w", errReadModel, err)
	}
	return snap, nil
}
