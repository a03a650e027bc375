package partition_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// BenchmarkDrain times a backlog of 6,000 events (1,000 users, each created with five
// todos, projector defaults: batches of 100, 16 writes in flight) drained by: the
// unpartitioned layout's single durable (the release before partitions), and the
// partitioned stream (16 partitions) with one and with three replicas, all in one
// process. It reports events/s; run it alone on a quiet machine:
//
//	go test -run '^$' -bench Drain -benchtime 1x ./internal/partition/
func BenchmarkDrain(b *testing.B) {
	for _, c := range []struct {
		name     string
		layout   int // partitions; 0: the unpartitioned layout
		replicas int
	}{{"unpartitioned", 0, 1}, {"partitioned-1-replica", 16, 1}, {"partitioned-3-replicas", 16, 3}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				env := projtest.NewUnpartitioned(b)
				if c.layout > 0 {
					env.Partition(b, c.layout)
				}
				w := projtest.UsersWithTodos(b, 1000, 5)
				env.Publish(b, w.Events...)
				b.StartTimer()
				start := time.Now()
				for i := range c.replicas {
					cfg := env.GroupConfig(durable, fmt.Sprintf("r%d", i))
					cfg.Consumer.BatchSize, cfg.Consumer.MaxAckPending, cfg.Consumer.Concurrency = 100, 1000, 16
					env.StartMember(b, cfg)
				}
				sharedtest.Eventually(b, 10*time.Minute, env.Converged(w))
				b.ReportMetric(float64(len(w.Events))/time.Since(start).Seconds(), "events/s")
				b.StopTimer()
			}
		})
	}
}

// BenchmarkSteady offers todo writes (a create, then a completion) of 200 users at a
// steady rate for 10 s to one replica on the partitioned stream (16 partitions,
// projector defaults), and reports the rate they were applied at, from the first
// publish until the read model converged: at or near the offered rate while the
// replica keeps up. At such rates each partition fetches one or two events at a time,
// so what the benchmark measures is how the replica batches across its partitions.
// Run it alone on a quiet machine:
//
//	go test -run '^$' -bench Steady -benchtime 1x ./internal/partition/
func BenchmarkSteady(b *testing.B) {
	const (
		users   = 200
		seconds = 10
	)
	for _, rate := range []int{200, 400, 800, 1600} {
		b.Run(fmt.Sprintf("offered-%d-per-s", rate), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				env := projtest.New(b)
				env.Partition(b, 16)
				w := projtest.NewWorld(b)
				owners := make([]uuid.UUID, users)
				for i := range owners {
					owners[i] = w.CreateUser()
				}
				env.Publish(b, w.Events...)
				cfg := env.GroupConfig(durable, "r0")
				cfg.Consumer.BatchSize, cfg.Consumer.MaxAckPending, cfg.Consumer.Concurrency = 100, 1000, 16
				env.StartMember(b, cfg)
				sharedtest.Eventually(b, time.Minute, env.Converged(w))
				seeded := len(w.Events)
				for i := 0; len(w.Events)-seeded < rate*seconds; i++ {
					w.SetCompleted(w.CreateTodo(owners[i%users], fmt.Sprintf("todo %d", i)), true)
				}
				b.StartTimer()
				start := time.Now()
				publishAt(b, env, w.Events[seeded:], rate)
				sharedtest.Eventually(b, 10*time.Minute, env.Converged(w))
				b.ReportMetric(float64(len(w.Events)-seeded)/time.Since(start).Seconds(), "events/s")
				b.StopTimer()
			}
		})
	}
}

// publishAt publishes events in order at rate per second.
func publishAt(b *testing.B, env *projtest.Env, events []event.Envelope, rate int) {
	b.Helper()
	ctx := sharedtest.Context(b, 10*time.Minute)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i, e := range events {
		// Open loop: event i goes out at its own instant, whatever the last publish took.
		timer.Reset(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		select {
		case <-ctx.Done():
			b.Fatalf("published %d of %d events: %v", i, len(events), ctx.Err())
		case <-timer.C:
		}
		env.Publish(b, e)
	}
}
