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

// DeletePublished deletes up to limit records of partitions' events published more
// than retention ago, and returns how many.
func DeletePublished(ctx context.Context, db postgres.DBTX, retention time.Duration, partitions []int32, limit int) (int64, error) {
	tag, err := db.Exec(ctx, deletePublishedSQL, retention.Milliseconds(), partitions, limit)
	if err != nil {
		return 0, fmt.Errorf("delete published outbox rows: %w", err)
	}
	return tag.RowsAffected(), nil
}
