package projtest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/partition"
)

// GroupConfig is a partition group config fit for tests: the consumer of
// ConsumerConfig(durable) (AckWait well above a batch's writes on a loaded machine:
// a batch in hand past AckWait is delivered again, out of order), heartbeats and
// claims that live two seconds.
func (e *Env) GroupConfig(durable, member string) partition.Config {
	cc := e.ConsumerConfig(durable)
	cc.ShutdownTimeout = 10 * time.Second
	return partition.Config{Consumer: cc, SubjectPrefix: Prefix, Member: member, Bucket: "projector-members-" + durable,
		MemberTTL: 2 * time.Second, StatsInterval: 200 * time.Millisecond}
}

// Member is one projector replica in a partition group, with a NATS connection of
// its own, as a process has.
type Member struct {
	Group   *partition.Group
	Metrics *metrics.Metrics
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	t       testing.TB
}

// StartMember runs a replica of the group until Stop, Kill or the end of the test.
func (e *Env) StartMember(t testing.TB, cfg partition.Config) *Member {
	t.Helper()
	nc, js := e.Connect(t)
	m := metrics.New(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	mb := &Member{Group: partition.New(cfg, js, e.Store, m, e.Log.With("member", cfg.Member)), Metrics: m, nc: nc, cancel: cancel,
		done: make(chan error, 1), t: t}
	go func() { mb.done <- mb.Group.Run(ctx) }()
	t.Cleanup(mb.Stop)
	return mb
}

// Stop is SIGTERM: the replica hands its partitions over and returns.
func (m *Member) Stop() {
	m.once.Do(func() {
		m.cancel()
		if err := <-m.done; err != nil {
			m.t.Errorf("member: %v", err)
		}
		m.nc.Close()
	})
}

// Kill is kill -9 as far as NATS can tell: the connection drops with nothing
// acknowledged, released or unpinned; the replica's goroutines are then stopped.
func (m *Member) Kill() {
	m.once.Do(func() {
		m.nc.Close()
		m.cancel()
		<-m.done
	})
}
