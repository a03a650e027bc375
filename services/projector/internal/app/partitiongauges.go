package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/process"
)

// partitionGauges keeps the per-partition gauges of the partitions this replica holds
// (held, as partition.Group.Held reports them) until ctx ends, refreshing them every
// interval.
func partitionGauges(ctx context.Context, js jetstream.JetStream, stream, durable string, held func() []string, m *metrics.Metrics, interval time.Duration, log *slog.Logger) {
	reported := map[string]bool{}
	refresh := func() {
		qctx, cancel := context.WithTimeout(ctx, interval)
		defer cancel()
		if err := refreshPartitionGauges(qctx, js, stream, durable, held(), reported, m); err != nil && ctx.Err() == nil {
			log.Debug("partition gauges not refreshed", "error", err)
		}
	}
	refresh()
	process.Every(ctx, interval, refresh)
}

// refreshPartitionGauges sets the gauges of the held units from their durables'
// state, in one listing of the stream's consumers, and removes those of units no
// longer held; reported is the set of units with series, kept between calls.
func refreshPartitionGauges(ctx context.Context, js jetstream.JetStream, stream, durable string, held []string, reported map[string]bool, m *metrics.Metrics) error {
	mine := map[string]bool{}
	for _, u := range held {
		mine[u] = true
	}
	for u := range reported {
		if !mine[u] {
			m.PartitionPending.DeleteLabelValues(u)
			m.PartitionAckPending.DeleteLabelValues(u)
			delete(reported, u)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		u := event.ConsumerUnit(ci.Name, durable)
		if !mine[u] {
			continue
		}
		m.PartitionPending.WithLabelValues(u).Set(float64(ci.NumPending))
		m.PartitionAckPending.WithLabelValues(u).Set(float64(ci.NumAckPending))
		reported[u] = true
	}
	return infos.Err()
}
