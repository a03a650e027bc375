// Package metrics holds the publisher's Prometheus metrics, registered on the admin
// server's registry.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics of one publisher process.
type Metrics struct {
	Published   prometheus.Counter
	Failed      *prometheus.CounterVec // by reason: broker (transient) or event (counted on the row)
	Parked      prometheus.Counter
	Fenced      prometheus.Counter
	BatchSize   prometheus.Histogram
	PublishTime prometheus.Histogram
	EventLag    prometheus.Histogram
	Backlog     prometheus.Gauge
	OldestAge   prometheus.Gauge
	Retrying    prometheus.Gauge
	ParkedRows  prometheus.Gauge
	LeasesHeld  prometheus.Gauge
	WakeMode    *prometheus.GaugeVec
	CleanedUp   prometheus.Counter
	Vacuums     *prometheus.CounterVec
}

// New creates the metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		Published:   f.NewCounter(prometheus.CounterOpts{Name: "publisher_events_published_total", Help: "Outbox rows acknowledged by JetStream and marked published."}),
		Failed:      f.NewCounterVec(prometheus.CounterOpts{Name: "publisher_publish_failures_total", Help: "Failed publishes of outbox rows: reason=broker (connection or timeout, retried without counting against the row) or reason=event (counted against the row, backed off)."}, []string{"reason"}),
		Parked:      f.NewCounter(prometheus.CounterOpts{Name: "publisher_events_parked_total", Help: "Outbox rows parked after MAX_ATTEMPTS failed publishes."}),
		Fenced:      f.NewCounter(prometheus.CounterOpts{Name: "publisher_mark_fenced_total", Help: "Acknowledged rows not marked because this replica's lease was lost; the new owner republishes them and JetStream drops the duplicates."}),
		BatchSize:   f.NewHistogram(prometheus.HistogramOpts{Name: "publisher_batch_size", Help: "Rows claimed per drain.", Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}}),
		PublishTime: f.NewHistogram(prometheus.HistogramOpts{Name: "publisher_publish_duration_seconds", Help: "Time from the first publish of a batch to its last PubAck.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		EventLag:    f.NewHistogram(prometheus.HistogramOpts{Name: "publisher_event_lag_seconds", Help: "Time from an event's creation to its PubAck.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		Backlog:     f.NewGauge(prometheus.GaugeOpts{Name: "publisher_outbox_backlog", Help: "Unpublished outbox rows, parked ones excluded (all partitions)."}),
		OldestAge:   f.NewGauge(prometheus.GaugeOpts{Name: "publisher_outbox_oldest_unpublished_age_seconds", Help: "Age of the oldest unpublished, unparked outbox row; 0 when the backlog is empty."}),
		Retrying:    f.NewGauge(prometheus.GaugeOpts{Name: "publisher_outbox_retrying", Help: "Unpublished outbox rows whose last publish failed."}),
		ParkedRows:  f.NewGauge(prometheus.GaugeOpts{Name: "publisher_outbox_parked", Help: "Parked outbox rows waiting for an operator (publisher retry-parked)."}),
		LeasesHeld:  f.NewGauge(prometheus.GaugeOpts{Name: "publisher_leases_held", Help: "Outbox partitions this replica holds a lease on."}),
		WakeMode:    f.NewGaugeVec(prometheus.GaugeOpts{Name: "publisher_wake_mode", Help: "1 for the wake-up mode in use: listen (PostgreSQL notifications plus idle polling) or poll."}, []string{"mode"}),
		CleanedUp:   f.NewCounter(prometheus.CounterOpts{Name: "publisher_outbox_deleted_total", Help: "Published outbox rows deleted after the retention age."}),
		Vacuums:     f.NewCounterVec(prometheus.CounterOpts{Name: "publisher_outbox_vacuums_total", Help: "Maintenance the publisher ran on an outbox table: action=vacuum (VACUUM (ANALYZE), dead tuples reached VACUUM_DEAD_ROWS) or action=analyze (as many rows changed since its last ANALYZE)."}, []string{"table", "action"}),
	}
}
