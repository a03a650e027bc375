package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

// sweepBatch bounds one delete of expired idempotency keys, so that each statement
// stays short however many keys expired at once.
const sweepBatch = 1000

// sweepIdempotencyKeys deletes expired idempotency keys every interval until ctx ends.
// Failures are logged and retried at the next tick: expired keys are already ignored by
// lookups, so a late sweep costs only disk.
func sweepIdempotencyKeys(ctx context.Context, store *postgres.Store, interval time.Duration, log *slog.Logger) {
	process.Every(ctx, interval, func() {
		var total int64
		for ctx.Err() == nil {
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := store.DeleteExpiredIdempotencyKeys(callCtx, sweepBatch)
			cancel()
			if err != nil {
				log.Warn("sweep idempotency keys", "error", err)
				break
			}
			total += n
			if n < sweepBatch {
				break
			}
		}
		if total > 0 {
			log.Info("swept expired idempotency keys", "deleted", total)
		}
	})
}
