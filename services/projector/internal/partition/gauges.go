package partition

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/shared/event"
)

// refreshGauges keeps the group's gauges until ctx ends: the consumer gauges summed
// over the group's durables (every partition's and the legacy one), the pending
// counts of each unit this replica holds, and the dead letters. Both kinds of
// consumer gauge come from one listing of the stream's consumers a refresh.
func (g *Group) refreshGauges(ctx context.Context) {
	reported := map[string]bool{}
	consumer.MirrorGauges(ctx, g.cfg.StatsInterval, g.metrics, deadletter.New(g.store.Control()), func(ctx context.Context) (pending, ackPending, redelivered uint64, _ error) {
		units, err := durables(ctx, g.js, g.cfg.Consumer.Stream, g.cfg.Consumer.Durable)
		setUnitGauges(g.metrics, units, g.Held(), reported)
		if err != nil {
			return 0, 0, 0, err
		}
		pending, ackPending, redelivered = totals(units)
		return pending, ackPending, redelivered, nil
	})
}

// durables lists the stream's consumers once and returns the state of durable's, by
// unit (event.ConsumerUnit): its partitions' durables (<durable>-p<i>) and durable
// itself.
func durables(ctx context.Context, js jetstream.JetStream, stream, durable string) (map[string]*jetstream.ConsumerInfo, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	units := map[string]*jetstream.ConsumerInfo{}
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		if u := event.ConsumerUnit(ci.Name, durable); u != "" {
			units[u] = ci
		}
	}
	return units, infos.Err()
}

// totals sums pending, ack-pending and redelivered messages over units.
func totals(units map[string]*jetstream.ConsumerInfo) (pending, ackPending, redelivered uint64) {
	for _, ci := range units {
		pending += ci.NumPending
		ackPending += uint64(ci.NumAckPending)
		redelivered += uint64(ci.NumRedelivered)
	}
	return pending, ackPending, redelivered
}

// setUnitGauges sets m's per-partition gauges of the held units from their state in
// units, one series a unit, and removes the series of units no longer held; reported
// is the set of units with series, kept between calls. A held unit missing from units
// (its listing failed) keeps its last values.
func setUnitGauges(m *metrics.Metrics, units map[string]*jetstream.ConsumerInfo, held []string, reported map[string]bool) {
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
	for u := range mine {
		if ci, ok := units[u]; ok {
			m.PartitionPending.WithLabelValues(u).Set(float64(ci.NumPending))
			m.PartitionAckPending.WithLabelValues(u).Set(float64(ci.NumAckPending))
			reported[u] = true
		}
	}
}
