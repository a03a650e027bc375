// Package syncstatus reports how far the read model is behind the source of truth, for
// GET /health/sync: the outbox backlog (PostgreSQL), the stream and the projector's
// consumers (JetStream: their sum, and each partition's state, lag and holder, the
// replica whose claim the projector's membership bucket holds), the projection
// watermark and the dead letters (MongoDB), and the alerts raised when thresholds are
// crossed.
//
// Each source is read concurrently under its own timeout; an unreachable source is
// itself a critical alert, so the report always answers. The report is meant for a
// public port: an alert names only the class of a source's failure, never its text,
// which can hold host names, users and addresses; the failures themselves are in
// Report.Failures, for the log.
package syncstatus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/api/internal/readside"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/outbox"
	sharedpg "github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Severities, ordered.
const (
	OK       = "ok"
	Warning  = "warning"
	Critical = "critical"
)

// Thresholds raise alerts; a zero threshold is never crossed.
type Thresholds struct {
	OutboxAgeWarn, OutboxAgeCrit time.Duration
	BacklogWarn, BacklogCrit     int64
	LagWarn, LagCrit             time.Duration
	PendingWarn, PendingCrit     int64
}

// ReadModel is what the report needs from MongoDB.
type ReadModel interface {
	Watermark(ctx context.Context) (readmodel.Watermark, error)
	DeadLetterCount(ctx context.Context) (int64, error)
}

// OutboxReader reads the outbox statistics from PostgreSQL.
type OutboxReader func(ctx context.Context) (outbox.Stats, error)

// Reporter gathers Reports.
type Reporter struct {
	Outbox    OutboxReader
	JetStream jetstream.JetStream
	Stream    string
	Consumer  string
	// Members is the projector's membership bucket (KV): its c.<unit> keys name the
	// replica consuming each partition. Read only; empty: not read.
	Members    string
	ReadModel  ReadModel
	Thresholds Thresholds
	// Timeout bounds each source's reads.
	Timeout time.Duration
	Now     func() time.Time
}

// Report is the body of GET /health/sync.
type Report struct {
	Status      string            `json:"status"`
	CheckedAt   time.Time         `json:"checked_at"`
	Outbox      *OutboxReport     `json:"outbox"`
	Stream      *StreamReport     `json:"stream"`
	Consumer    *ConsumerReport   `json:"consumer"`
	Projection  *ProjectionReport `json:"projection"`
	DeadLetters *int64            `json:"dead_letters"`
	Alerts      []Alert           `json:"alerts"`
	// Failures are the errors behind the alerts of sources that could not be read:
	// for the log, never for the body.
	Failures []Failure `json:"-"`
}

// Failure is a source that could not be read.
type Failure struct {
	Check string
	Err   error
}

// OutboxReport is the state of the outbox.
type OutboxReport struct {
	Backlog          int64   `json:"backlog"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	Retrying         int64   `json:"retrying"`
	Parked           int64   `json:"parked"`
}

// StreamReport is the state of the event stream.
type StreamReport struct {
	Name      string `json:"name"`
	Messages  uint64 `json:"messages"`
	Bytes     uint64 `json:"bytes"`
	FirstSeq  uint64 `json:"first_seq"`
	LastSeq   uint64 `json:"last_seq"`
	Consumers int    `json:"consumers"`
}

// ConsumerReport is the state of the projector's durable consumers, summed, and of
// each one.
type ConsumerReport struct {
	Name           string `json:"name"`
	Pending        uint64 `json:"pending"`
	AckPending     int    `json:"ack_pending"`
	Redelivered    int    `json:"redelivered"`
	DeliveredSeq   uint64 `json:"delivered_seq"`
	AckFloorSeq    uint64 `json:"ack_floor_seq"`
	WaitingPullers int    `json:"waiting_pullers"`
	// Partitions are the durables one by one, in partition order, the unpartitioned
	// layout's last while an upgrade drains it.
	Partitions []PartitionReport `json:"partitions"`
}

// PartitionReport is one of the projector's durables: a stream partition's, or the
// unpartitioned layout's.
type PartitionReport struct {
	// Partition is the unit the projector's replicas claim: p<i>, or legacy.
	Partition   string `json:"partition"`
	Consumer    string `json:"consumer"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	AckFloorSeq uint64 `json:"ack_floor_seq"`
	// LagSeconds is the age of the partition's oldest unapplied event.
	LagSeconds float64 `json:"lag_seconds"`
	// Holder is the projector replica whose claim on the partition is live; nil when
	// none is (no replica yet, or a dead one's claim aged out) or the bucket could not
	// be read.
	Holder *string `json:"holder"`
}

// ProjectionReport is how far the read model has got. LagSeconds is the age of the
// oldest event the projector has not applied yet: zero when it has caught up.
type ProjectionReport struct {
	WatermarkSeq  uint64     `json:"watermark_seq"`
	WatermarkTime *time.Time `json:"watermark_time"`
	LagSeconds    float64    `json:"lag_seconds"`
}

// Alert is one crossed threshold or unreachable source.
type Alert struct {
	Severity string `json:"severity"`
	Check    string `json:"check"`
	Message  string `json:"message"`
	// Error is the class of a source's failure (see Classify); empty for thresholds.
	Error     string  `json:"error,omitempty"`
	Value     float64 `json:"value,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
}

// Classes of failure an alert may name.
const (
	ErrorTimeout     = "timeout"     // the source did not answer in time
	ErrorUnavailable = "unavailable" // the source could not be reached or dropped the connection
	ErrorNotFound    = "not_found"   // the stream or consumer does not exist
	ErrorFailed      = "failed"      // anything else
)

// Classify returns the class of a source's failure: what the public report may say.
func Classify(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), mongo.IsTimeout(err):
		return ErrorTimeout
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerNotFound):
		return ErrorNotFound
	case sharedpg.IsUnavailable(err), mongo.IsNetworkError(err), errors.As(err, &netErr),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrNoServers):
		return ErrorUnavailable
	}
	return ErrorFailed
}

// sources names each check's source in an alert.
var sources = map[string]string{
	"outbox":     "the outbox (PostgreSQL)",
	"stream":     "the stream or its consumer (JetStream)",
	"members":    "the projector's membership bucket (JetStream KV)",
	"read_model": "the read model (MongoDB)",
}

// Report reads every source and evaluates the thresholds.
func (r *Reporter) Report(ctx context.Context) Report {
	now := r.Now()
	g := &gathering{Reporter: r, now: now, rep: Report{Status: OK, CheckedAt: now.UTC()}}
	var wg sync.WaitGroup
	for _, s := range []struct {
		check string
		read  func(ctx context.Context) error
	}{
		{"outbox", g.readOutbox},
		{"stream", g.readStream},
		{"members", g.readMembers},
		{"read_model", g.readReadModel},
	} {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, r.Timeout)
			defer cancel()
			if err := s.read(ctx); err != nil {
				g.fail(s.check, err)
			}
		})
	}
	wg.Wait()

	rep := g.rep
	if rep.Consumer != nil {
		rep.Projection = &ProjectionReport{}
		if g.watermark != nil {
			t := g.watermark.OccurredAt.UTC()
			rep.Projection.WatermarkSeq, rep.Projection.WatermarkTime = g.watermark.StreamSeq, &t
		}
		rep.Consumer.Partitions = r.partitions(ctx, g.stream, g.units, g.holders, g.watermark, now)
		// The oldest unapplied event of all is the oldest of the partitions'.
		for _, p := range rep.Consumer.Partitions {
			rep.Projection.LagSeconds = max(rep.Projection.LagSeconds, p.LagSeconds)
		}
	}
	r.evaluate(&rep)
	for _, a := range rep.Alerts {
		rep.Status = worse(rep.Status, a.Severity)
	}
	if rep.Alerts == nil {
		rep.Alerts = []Alert{}
	}
	return rep
}

// gathering is one Report while its sources are read at once: each reader sets its
// own fields of rep and of the answers kept for the partitions, so that only the
// alerts and failures, which every reader may add to, need the lock.
type gathering struct {
	*Reporter
	now time.Time

	mu  sync.Mutex // guards rep.Alerts and rep.Failures
	rep Report

	stream    jetstream.Stream
	units     []*jetstream.ConsumerInfo
	holders   map[string]string
	watermark *readmodel.Watermark
}

// fail raises the alert of a source that could not be read.
func (g *gathering) fail(check string, err error) {
	class := Classify(err)
	// Who holds which partition is for the operator's eyes: not knowing it stops nothing.
	severity := Critical
	if check == "members" {
		severity = Warning
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rep.Alerts = append(g.rep.Alerts, Alert{Severity: severity, Check: check, Error: class,
		Message: fmt.Sprintf("%s could not be read (%s); the cause is in the API's log", sources[check], class)})
	g.rep.Failures = append(g.rep.Failures, Failure{Check: check, Err: err})
}

func (g *gathering) readOutbox(ctx context.Context) error {
	s, err := g.Outbox(ctx)
	if err != nil {
		return fmt.Errorf("read the outbox: %w", err)
	}
	g.rep.Outbox = &OutboxReport{Backlog: s.Backlog, OldestAgeSeconds: s.OldestAge(g.now).Seconds(), Retrying: s.Retrying, Parked: s.Parked}
	return nil
}

func (g *gathering) readStream(ctx context.Context) error {
	st, err := g.JetStream.Stream(ctx, g.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", g.Stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", g.Stream, err)
	}
	s := info.State
	g.rep.Stream = &StreamReport{Name: g.Stream, Messages: s.Msgs, Bytes: s.Bytes, FirstSeq: s.FirstSeq, LastSeq: s.LastSeq, Consumers: s.Consumers}
	ci, each, err := projectorConsumers(ctx, st, g.Consumer)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", g.Consumer, err)
	}
	g.stream, g.units = st, each
	g.rep.Consumer = &ConsumerReport{
		Name: g.Consumer, Pending: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered,
		DeliveredSeq: ci.Delivered.Stream, AckFloorSeq: ci.AckFloor.Stream, WaitingPullers: ci.NumWaiting,
	}
	return nil
}

func (g *gathering) readMembers(ctx context.Context) error {
	if g.Members == "" {
		return nil
	}
	h, err := readHolders(ctx, g.JetStream, g.Members)
	if err != nil {
		return fmt.Errorf("membership bucket %s: %w", g.Members, err)
	}
	g.holders = h
	return nil
}

func (g *gathering) readReadModel(ctx context.Context) error {
	n, err := g.ReadModel.DeadLetterCount(ctx)
	if err != nil {
		return fmt.Errorf("count dead letters: %w", err)
	}
	g.rep.DeadLetters = &n
	w, err := g.ReadModel.Watermark(ctx)
	switch {
	case errors.Is(err, readside.ErrNotFound):
	case err != nil:
		return fmt.Errorf("read the watermark: %w", err)
	default:
		g.watermark = &w
	}
	return nil
}

// projectorConsumers is the state of the projector's durables summed into one: one
// per stream partition, <name>-p<i>, and <name> itself while the projector drains
// the unpartitioned layout of earlier releases. The ack floor is the lowest of those
// with work left, the one the oldest unapplied event is behind.
func projectorConsumers(ctx context.Context, st jetstream.Stream, name string) (*jetstream.ConsumerInfo, []*jetstream.ConsumerInfo, error) {
	sum := &jetstream.ConsumerInfo{Name: name}
	var each []*jetstream.ConsumerInfo
	infos := st.ListConsumers(ctx)
	for ci := range infos.Info() {
		if event.ConsumerUnit(ci.Name, name) == "" {
			continue
		}
		each = append(each, ci)
		busy := ci.NumPending > 0 || ci.NumAckPending > 0
		if busy && (sum.NumPending == 0 && sum.NumAckPending == 0 || ci.AckFloor.Stream < sum.AckFloor.Stream) {
			sum.AckFloor = ci.AckFloor
		}
		if !busy && sum.NumPending == 0 && sum.NumAckPending == 0 {
			sum.AckFloor.Stream = max(sum.AckFloor.Stream, ci.AckFloor.Stream)
		}
		sum.NumPending += ci.NumPending
		sum.NumAckPending += ci.NumAckPending
		sum.NumRedelivered += ci.NumRedelivered
		sum.NumWaiting += ci.NumWaiting
		sum.Delivered.Stream = max(sum.Delivered.Stream, ci.Delivered.Stream)
	}
	if err := infos.Err(); err != nil {
		return nil, nil, err
	}
	if len(each) == 0 {
		return nil, nil, jetstream.ErrConsumerNotFound
	}
	slices.SortFunc(each, func(a, b *jetstream.ConsumerInfo) int { return unitOrder(a.Name, name) - unitOrder(b.Name, name) })
	return sum, each, nil
}

// unitOrder sorts partitions by number, the legacy durable last.
func unitOrder(consumer, name string) int {
	n, err := strconv.Atoi(strings.TrimPrefix(event.ConsumerUnit(consumer, name), "p"))
	if err != nil {
		return math.MaxInt32
	}
	return n
}

// readHolders reads the live claims (c.<unit>) of the membership bucket: unit to
// replica. A bucket that does not exist (no partitioned projector has run yet) holds
// none.
func readHolders(ctx context.Context, js jetstream.JetStream, bucket string) (map[string]string, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	w, err := kv.Watch(ctx, "c.*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	holders := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch ended before its initial values")
			}
			if e == nil { // the initial values are in
				return holders, nil
			}
			holders[strings.TrimPrefix(e.Key(), "c.")] = string(e.Value())
		}
	}
}

// partitions reports each durable with its lag and holder.
func (r *Reporter) partitions(ctx context.Context, st jetstream.Stream, units []*jetstream.ConsumerInfo, holders map[string]string, w *readmodel.Watermark, now time.Time) []PartitionReport {
	out := make([]PartitionReport, len(units))
	var wg sync.WaitGroup
	for i, ci := range units {
		u := event.ConsumerUnit(ci.Name, r.Consumer)
		out[i] = PartitionReport{Partition: u, Consumer: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
			Redelivered: ci.NumRedelivered, AckFloorSeq: ci.AckFloor.Stream}
		if h, ok := holders[u]; ok {
			out[i].Holder = &h
		}
		wg.Go(func() { out[i].LagSeconds = r.lag(ctx, st, ci, w, now).Seconds() })
	}
	wg.Wait()
	return out
}

// lag is the age of ci's oldest event not yet applied: zero when the consumer has
// nothing pending; otherwise the commit time of the first message of its filter past
// its ack floor, read from the stream; failing that (the message was compacted away),
// the age of the newest applied event, an upper bound.
func (r *Reporter) lag(ctx context.Context, st jetstream.Stream, ci *jetstream.ConsumerInfo, w *readmodel.Watermark, now time.Time) time.Duration {
	if ci.NumPending == 0 && ci.NumAckPending == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	var opts []jetstream.GetMsgOpt
	if f := filter(ci.Config); f != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(f))
	}
	if msg, err := st.GetMsg(ctx, ci.AckFloor.Stream+1, opts...); err == nil {
		return max(now.Sub(msg.Time), 0)
	}
	if w != nil {
		return max(now.Sub(w.OccurredAt), 0)
	}
	return 0
}

// filter is the one subject filter of a consumer, or "" when it has none or several.
func filter(c jetstream.ConsumerConfig) string {
	if c.FilterSubject != "" {
		return c.FilterSubject
	}
	if len(c.FilterSubjects) == 1 {
		return c.FilterSubjects[0]
	}
	return ""
}

func (r *Reporter) evaluate(rep *Report) {
	t := r.Thresholds
	if o := rep.Outbox; o != nil {
		age := time.Duration(o.OldestAgeSeconds * float64(time.Second))
		rep.Alerts = appendDuration(rep.Alerts, "outbox_oldest_age", "the oldest unpublished outbox row is waiting", age, t.OutboxAgeWarn, t.OutboxAgeCrit)
		rep.Alerts = appendCount(rep.Alerts, "outbox_backlog", "outbox rows wait to be published", o.Backlog, t.BacklogWarn, t.BacklogCrit)
		if o.Parked > 0 {
			rep.Alerts = append(rep.Alerts, Alert{Severity: Warning, Check: "outbox_parked", Value: float64(o.Parked),
				Message: "outbox rows failed too often and are parked: inspect with `publisher list-parked`, retry with `publisher retry-parked`"})
		}
	}
	if c := rep.Consumer; c != nil {
		rep.Alerts = appendCount(rep.Alerts, "consumer_pending", "stream messages wait for the projector", int64(c.Pending)+int64(c.AckPending), t.PendingWarn, t.PendingCrit)
	}
	if p := rep.Projection; p != nil {
		lag := time.Duration(p.LagSeconds * float64(time.Second))
		rep.Alerts = appendDuration(rep.Alerts, "projection_lag", "the oldest unapplied event is waiting", lag, t.LagWarn, t.LagCrit)
	}
	if d := rep.DeadLetters; d != nil && *d > 0 {
		rep.Alerts = append(rep.Alerts, Alert{Severity: Warning, Check: "dead_letters", Value: float64(*d),
			Message: "events could not be applied and wait in the dead letters: `projector deadletters list`, then redrive"})
	}
}

func appendDuration(alerts []Alert, check, what string, v, warn, crit time.Duration) []Alert {
	sev, limit := level(float64(v), float64(warn), float64(crit))
	if sev == OK {
		return alerts
	}
	return append(alerts, Alert{Severity: sev, Check: check, Value: v.Seconds(), Threshold: time.Duration(limit).Seconds(),
		Message: fmt.Sprintf("%s for %s (threshold %s)", what, v.Round(time.Millisecond), time.Duration(limit))})
}

func appendCount(alerts []Alert, check, what string, v, warn, crit int64) []Alert {
	sev, limit := level(float64(v), float64(warn), float64(crit))
	if sev == OK {
		return alerts
	}
	return append(alerts, Alert{Severity: sev, Check: check, Value: float64(v), Threshold: limit,
		Message: fmt.Sprintf("%d %s (threshold %d)", v, what, int64(limit))})
}

func level(v, warn, crit float64) (string, float64) {
	switch {
	case crit > 0 && v >= crit:
		return Critical, crit
	case warn > 0 && v >= warn:
		return Warning, warn
	}
	return OK, 0
}

func worse(a, b string) string {
	rank := map[string]int{OK: 0, Warning: 1, Critical: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
