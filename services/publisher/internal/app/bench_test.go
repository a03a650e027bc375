package app_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/publisher/internal/pubtest"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// BenchmarkLatency measures outbox-to-stream latency at low load (one event every 20ms)
// with a whole publisher running: from the start of the writing transaction to the
// message's delivery by an ordered consumer on the stream. "notify" wakes the publisher by LISTEN/NOTIFY,
// "poll" polls with the default POLL_MIN and POLL_MAX (as on CockroachDB).
// Run it with: go test -run '^$' -bench Latency -benchtime 1x.
func BenchmarkLatency(b *testing.B) {
	for _, mode := range []struct {
		name   string
		notify bool
		env    map[string]string
	}{
		{"notify", true, map[string]string{"WAKE_MODE": "listen", "POLL_MIN": "10ms", "POLL_MAX": "1s"}},
		{"poll", false, map[string]string{"WAKE_MODE": "poll", "POLL_MIN": "10ms", "POLL_MAX": "1s"}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				benchLatency(b, mode.notify, mode.env)
			}
		})
	}
}

func benchLatency(b *testing.B, notify bool, env map[string]string) {
	const events = 300
	ctx := sharedtest.Context(b, 2*time.Minute)
	s := newStack(b, natsserver.NewTest(b, nil).ClientURL())
	s.start(b, "bench", env)
	s.leasesReach(ctx, b, "every lease", func(l map[string]int) bool { return l["bench"] == 64 })

	var (
		mu        sync.Mutex
		committed = map[string]time.Time{}
		latencies []time.Duration
		done      = make(chan struct{})
	)
	st, err := s.js.Stream(ctx, streamName)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if at, ok := committed[m.Headers().Get("Nats-Msg-Id")]; ok {
			latencies = append(latencies, now.Sub(at))
			if len(latencies) == events {
				close(done)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	owner := uuid.New()
	b.ResetTimer()
	for range events {
		<-tick.C
		e := pubtest.Event(b, owner, uuid.New(), 1, "")
		// Timed from before the writing transaction begins: an upper bound that
		// includes the write itself (about a millisecond here).
		mu.Lock()
		committed[e.ID.String()] = time.Now()
		mu.Unlock()
		if err := pubtest.Write(ctx, s.pool, notify, e); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("%d of %d events arrived", len(latencies), events)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "p99_ms")
}
