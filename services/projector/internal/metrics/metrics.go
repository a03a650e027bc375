// Package metrics holds the projector's Prometheus metrics, registered on the
// registry the admin server exposes.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Outcome labels of Events.
const (
	OutcomeApplied      = "applied"
	OutcomeStale        = "stale"
	OutcomeFailed       = "failed" // will be retried (nak or held for a transient error)
	OutcomeDeadLettered = "dead_lettered"
)

// Metrics are the projector's instruments.
type Metrics struct {
	// Lag is commit (the event's occurred_at) to applied in MongoDB, per applied event.
	Lag prometheus.Histogram
	// Events counts events by outcome.
	Events *prometheus.CounterVec
	// Pending and AckPending mirror the durable consumers' state, summed over the
	// partitions (and the legacy durable while it drains).
	Pending    prometheus.Gauge
	AckPending prometheus.Gauge
	// Redelivered mirrors the consumer's count of messages delivered more than once
	// and not yet acknowledged: a steady rise means writes fail or AckWait is short.
	Redelivered prometheus.Gauge
	// DeadLetters is the number of dead letters waiting for an operator.
	DeadLetters prometheus.Gauge
	// BatchSeconds is the time to apply one fetched batch.
	BatchSeconds prometheus.Histogram
	// PartitionsHeld is the number of partitions this replica consumes (0: a standby).
	PartitionsHeld prometheus.Gauge
	// PartitionPending and PartitionAckPending are the state of each partition's
	// durable, by partition (p<i>, or legacy for the unpartitioned layout's), reported
	// by the replica that holds it only: their series say which replica holds which
	// partition and how far behind each is.
	PartitionPending    *prometheus.GaugeVec
	PartitionAckPending *prometheus.GaugeVec
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		// 5 ms to about 5 min: FerretDB sits in the tens of milliseconds, a backlog in minutes.
		Lag:                 f.NewHistogram(prometheus.HistogramOpts{Name: "projector_lag_seconds", Help: "Time from the commit of an event (occurred_at) to its write in the read model.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 17)}),
		Events:              f.NewCounterVec(prometheus.CounterOpts{Name: "projector_events_total", Help: "Events handled, by outcome: applied, stale (already as new or newer), failed (retried), dead_lettered."}, []string{"outcome"}),
		Pending:             f.NewGauge(prometheus.GaugeOpts{Name: "projector_consumer_pending", Help: "Messages in the stream not yet delivered to the consumer."}),
		AckPending:          f.NewGauge(prometheus.GaugeOpts{Name: "projector_consumer_ack_pending", Help: "Messages delivered to the consumer and not yet acknowledged."}),
		Redelivered:         f.NewGauge(prometheus.GaugeOpts{Name: "projector_consumer_redelivered", Help: "Messages delivered more than once and not yet acknowledged."}),
		DeadLetters:         f.NewGauge(prometheus.GaugeOpts{Name: "projector_dead_letters", Help: "Dead letters waiting for an operator (not redriven)."}),
		BatchSeconds:        f.NewHistogram(prometheus.HistogramOpts{Name: "projector_batch_seconds", Help: "Time to apply and acknowledge one fetched batch.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		PartitionsHeld:      f.NewGauge(prometheus.GaugeOpts{Name: "projector_partitions_held", Help: "Stream partitions this replica consumes; 0 while it is a standby."}),
		PartitionPending:    f.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_pending", Help: "Messages of a partition not yet delivered to its durable, reported by the replica holding the partition."}, []string{"partition"}),
		PartitionAckPending: f.NewGaugeVec(prometheus.GaugeOpts{Name: "projector_partition_ack_pending", Help: "Messages of a partition delivered and not yet acknowledged, reported by the replica holding the partition."}, []string{"partition"}),
	}
	for _, o := range []string{OutcomeApplied, OutcomeStale, OutcomeFailed, OutcomeDeadLettered} {
		m.Events.WithLabelValues(o)
	}
	return m
}
