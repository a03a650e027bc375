package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// Stats is the state of the outbox as the publisher and the API's /health/sync report
// it.
type Stats struct {
	// Backlog counts the rows waiting to be published, parked ones excluded.
	Backlog int64
	// OldestUnpublished is the creation time of the oldest row in Backlog; zero when
	// the backlog is empty.
	OldestUnpublished time.Time
	// Retrying counts backlog rows whose last publish failed (attempts > 0).
	Retrying int64
	// Parked counts rows that failed too often and wait for an operator
	// (`publisher retry-parked`).
	Parked int64
}

// OldestAge is how long the oldest unpublished row has waited, as of now.
func (s Stats) OldestAge(now time.Time) time.Duration {
	if s.OldestUnpublished.IsZero() {
		return 0
	}
	return now.Sub(s.OldestUnpublished)
}

// The partial index on unpublished rows keeps this as cheap as the backlog is small.
const statsSQL = `
SELECT count(*) FILTER (WHERE parked_at IS NULL),
       min(created_at) FILTER (WHERE parked_at IS NULL),
       count(*) FILTER (WHERE parked_at IS NULL AND attempts > 0),
       count(*) FILTER (WHERE parked_at IS NOT NULL)
FROM outbox
WHERE published_at IS NULL`

// ReadStats reads the outbox's Stats.
func ReadStats(ctx context.Context, db postgres.DBTX) (Stats, error) {
	var (
		s      Stats
		oldest *time.Time
	)
	if err := db.QueryRow(ctx, statsSQL).Scan(&s.Backlog, &oldest, &s.Retrying, &s.Parked); err != nil {
		return Stats{}, fmt.Errorf("read outbox stats: %w", err)
	}
	if oldest != nil {
		s.OldestUnpublished = *oldest
	}
	return s, nil
}
