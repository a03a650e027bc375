package partition_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
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
				w := projtest.NewWorld(b)
				for range 1000 {
					u := w.CreateUser()
					for j := range 5 {
						w.CreateTodo(u, fmt.Sprintf("todo %d", j))
					}
				}
				env.Publish(b, w.Events...)
				b.StartTimer()
				start := time.Now()
				for i := range c.replicas {
					cfg := env.GroupConfig(durable, fmt.Sprintf("r%d", i))
					cfg.Consumer.BatchSize, cfg.Consumer.MaxAckPending, cfg.Consumer.Concurrency = 100, 1000, 16
					env.StartMember(b, cfg)
				}
				projtest.Eventually(b, 10*time.Minute, env.Converged(w))
				b.ReportMetric(float64(len(w.Events))/time.Since(start).Seconds(), "events/s")
				b.StopTimer()
			}
		})
	}
}
