package outboxdb

import (
	"context"
	"fmt"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

// deletePublishedSQL deletes a bounded batch of the records of published events
// (outbox_published, migration 00007, written by markSQL), found by the index on
// published_at, as deleteLegacyPublishedSQL does.
const deletePublishedSQL = `
DELETE FROM outbox_published WHERE event_id IN (
    SELECT event_id FROM outbox_published
    WHERE published_at < now() - $1::bigint * interval '1 millisecond'
      AND partition = ANY($2)
    LIMIT $3)`

// A Cleanup deletes up to limit rows of partitions whose events were published more
// than retention ago, and returns how many it deleted.
type Cleanup func(ctx context.Context, db postgres.DBTX, retention time.Duration, partitions []int32, limit int) (int64, error)

// Cleanups delete the records of published events, and the rows that releases before
// outbox_published marked published in the outbox itself, until they are gone: run
// each until it deletes fewer than its limit.
var Cleanups = []Cleanup{cleanup(deletePublishedSQL), deleteLegacyPublished}

func cleanup(sql string) Cleanup {
	return func(ctx context.Context, db postgres.DBTX, retention time.Duration, partitions []int32, limit int) (int64, error) {
		tag, err := db.Exec(ctx, sql, retention.Milliseconds(), partitions, limit)
		if err != nil {
			return 0, fmt.Errorf("delete published outbox rows: %w", err)
		}
		return tag.RowsAffected(), nil
	}
}
