package consumer_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjetstream "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/project"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// BenchmarkSubscribers drains one backlog (500 users, each created with five todos:
// 3,000 events over the test stream's partitions, one pinned durable each, as package
// partition sets them up) through a Watermill router, with each subscriber:
//
//   - watermill-nats: watermill-nats/v2's pkg/jetstream subscriber, one subscription
//     per partition durable (ExistingConsumer, the priority group in ConsumeOptions),
//     and a handler that applies its one event, which is all that subscriber allows:
//     nats.go's Consume runs one callback at a time per subscription and the callback
//     waits for the handler's verdict and its confirmed ack (DoubleAck);
//   - watermill-nats-noop: the same with a handler that only acks: that subscriber's
//     own ceiling, with no read model at all;
//   - ours: one Consumer per partition durable feeding one Pipeline (the projector's
//     path), whose batches span the partitions.
//
// It reports events/s; run it alone on a quiet machine:
//
//	go test -run '^$' -bench Subscribers -benchtime 1x ./internal/consumer/
func BenchmarkSubscribers(b *testing.B) {
	for _, c := range []struct {
		name string
		run  func(b *testing.B, env *projtest.Env, cfg consumer.Config, durables []string, n int)
	}{
		{"watermill-nats", func(b *testing.B, env *projtest.Env, cfg consumer.Config, durables []string, n int) {
			theirs(b, env, durables, n, true)
		}},
		{"watermill-nats-noop", func(b *testing.B, env *projtest.Env, cfg consumer.Config, durables []string, n int) {
			theirs(b, env, durables, n, false)
		}},
		{"ours", ours},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				env := projtest.New(b)
				w := projtest.UsersWithTodos(b, 500, 5)
				env.Publish(b, w.Events...)
				cfg := env.ConsumerConfig("bench")
				cfg.BatchSize, cfg.MaxAckPending, cfg.Concurrency = 100, 1000, 16
				cfg.AckWait, cfg.WriteTimeout = 30*time.Second, 10*time.Second
				durables := make([]string, projtest.Partitions)
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				for p := range durables {
					pc := cfg
					pc.Durable = event.PartitionDurable(cfg.Durable, p)
					pc.FilterSubjects = []string{event.PartitionFilter(projtest.Prefix, p)}
					if _, err := consumer.New(pc, env.JS, env.Store, metrics.New(prometheus.NewRegistry()), env.Log).Ensure(ctx); err != nil {
						b.Fatal(err)
					}
					durables[p] = pc.Durable
				}
				cancel()
				b.StartTimer()
				start := time.Now()
				c.run(b, env, cfg, durables, len(w.Events))
				b.ReportMetric(float64(len(w.Events))/time.Since(start).Seconds(), "events/s")
				b.StopTimer()
			}
		})
	}
}

// ours drains the durables with a Consumer each, feeding one Pipeline.
func ours(b *testing.B, env *projtest.Env, cfg consumer.Config, durables []string, n int) {
	var applied atomic.Int64
	cfg.Applied = func(as []consumer.Applied) { applied.Add(int64(len(as))) }
	m := metrics.New(prometheus.NewRegistry())
	cfg.Pipeline = consumer.NewPipeline(cfg, env.Store, m, env.Log)
	pctx, stopPipe := context.WithCancel(context.Background())
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- cfg.Pipeline.Run(pctx) }()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p, d := range durables {
		pc := cfg
		pc.Durable = d
		pc.FilterSubjects = []string{event.PartitionFilter(projtest.Prefix, p)}
		c := consumer.New(pc, env.JS, env.Store, m, env.Log)
		wg.Go(func() { _ = c.Run(ctx) })
	}
	sharedtest.Eventually(b, 10*time.Minute, func() (bool, string) {
		return applied.Load() >= int64(n), fmt.Sprintf("%d of %d applied", applied.Load(), n)
	})
	cancel()
	wg.Wait()
	stopPipe()
	if err := <-pipeDone; err != nil {
		b.Error(err)
	}
}

// theirs drains the durables with watermill-nats/v2's JetStream subscriber, one
// subscription per durable, each event applied on its own when apply is set.
func theirs(b *testing.B, env *projtest.Env, durables []string, n int, apply bool) {
	nc, err := nats.Connect(env.NATS.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	// Their subscriber logs every message at info level: kept out of the figures.
	logger := watermill.NewSlogLogger(slog.New(slog.DiscardHandler))
	router, err := message.NewRouter(message.RouterConfig{}, logger)
	if err != nil {
		b.Fatal(err)
	}
	ctx := sharedtest.Context(b, 10*time.Minute)
	db, err := env.Store.Active(ctx)
	if err != nil {
		b.Fatal(err)
	}
	server, err := project.DetectServer(ctx, db.Client())
	if err != nil {
		b.Fatal(err)
	}
	proj := project.New(db, 16, project.OnServer(server))
	var done atomic.Int64
	handler := func(msg *message.Message) error {
		if apply {
			e, err := project.Decode(msg.Payload)
			if err != nil {
				return err
			}
			if r := proj.Apply(msg.Context(), []event.Envelope{e}); r[0].Err != nil {
				return r[0].Err
			}
		}
		done.Add(1)
		return nil
	}
	for _, d := range durables {
		sub, err := wmjetstream.NewSubscriber(wmjetstream.SubscriberConfig{
			Conn:   nc,
			Logger: logger,
			ResourceInitializer: wmjetstream.ExistingConsumer(func(string, string) jetstream.ConsumerConfig {
				return jetstream.ConsumerConfig{Name: d}
			}, ""),
			ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullPriorityGroup(consumer.PinGroup)},
		})
		if err != nil {
			b.Fatal(err)
		}
		router.AddConsumerHandler(d, env.Stream, sub, handler)
	}
	routerDone := make(chan error, 1)
	go func() { routerDone <- router.Run(ctx) }()
	sharedtest.Eventually(b, 10*time.Minute, func() (bool, string) {
		return done.Load() >= int64(n), fmt.Sprintf("%d of %d handled", done.Load(), n)
	})
	if err := router.Close(); err != nil {
		b.Error(err)
	}
	if err := <-routerDone; err != nil {
		b.Error(err)
	}
}
