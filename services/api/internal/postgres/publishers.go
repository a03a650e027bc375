package postgres

import (
	"context"
	"fmt"
)

// livePublishersSQL counts the publisher replicas heartbeating and the outbox
// partitions leased. The publisher owns publisher_replicas and publisher_leases
// (services/publisher/internal/outboxdb); the operator tools only read them, to tell
// whether a publisher runs.
const livePublishersSQL = `SELECT (SELECT count(*) FROM publisher_replicas WHERE expires_at > now()),
	       (SELECT count(*) FROM publisher_leases WHERE owner <> '' AND expires_at > now())`

// LivePublishers returns how many publisher replicas heartbeat and how many outbox
// partitions they lease. Heartbeats and leases expire after the publisher's LEASE_TTL.
func (s *Store) LivePublishers(ctx context.Context) (replicas, leases int, err error) {
	if err := s.pool.QueryRow(ctx, livePublishersSQL).Scan(&replicas, &leases); err != nil {
		return 0, 0, fmt.Errorf("look for live publishers: %w", err)
	}
	return replicas, leases, nil
}
