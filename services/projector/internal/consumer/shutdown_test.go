package consumer_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// runUntilSigterm runs c until sigterm, which ends Run's context, then calls
// afterSignal (the test's release of what holds the batch) and returns Run's error
// once Run has returned. The end of the test sends it if the test did not.
func runUntilSigterm(t *testing.T, c *consumer.Consumer, afterSignal func()) (sigterm func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		runErr = c.Run(ctx)
	}()
	sigterm = func() error {
		cancel()
		afterSignal()
		<-stopped
		return runErr
	}
	t.Cleanup(func() { _ = sigterm() })
	return sigterm
}

// SIGTERM (the end of Run's context) while the batch's writes are in flight: the
// writes finish, the batch is acknowledged, and nothing is delivered twice.
func TestShutdownFinishesBatchInHand(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 4)
	waiting, unlock := lockCollection(t, env, env.Control, readmodel.CollTodos)

	cfg := env.ConsumerConfig("projector")
	cfg.AckWait = time.Minute // no redelivery by expiry while the writes wait
	cfg.WriteTimeout = 30 * time.Second
	cfg.ShutdownTimeout = 30 * time.Second
	c := consumer.New(cfg, env.JS, env.Store, metrics.New(prometheus.NewRegistry()), env.Log)
	sigterm := runUntilSigterm(t, c, unlock)

	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		return waiting(), "no todo write waiting"
	})
	if err := sigterm(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	if ok, why := env.Converged(w)(); !ok {
		t.Fatalf("read model after the shutdown: %s", why)
	}
	sharedtest.Eventually(t, 10*time.Second, drained(env, "projector"))
	info, err := env.ConsumerInfo("projector")
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Consumer != uint64(len(w.Events)) || info.AckFloor.Stream != uint64(len(w.Events)) {
		t.Fatalf("consumer delivered %d times for %d messages (%d redelivered), acked up to %d: want each delivered once and acked",
			info.Delivered.Consumer, len(w.Events), info.NumRedelivered, info.AckFloor.Stream)
	}
}

// Batches are fetched one ahead. While the batch in hand is held through a stall longer
// than AckWait, the batch fetched beside it is kept in progress: when the stall ends,
// nothing has been delivered twice. On SIGTERM during the stall, both batches are
// applied and acknowledged and nothing more is fetched.
func TestPrefetchedBatchThroughStall(t *testing.T) {
	t.Parallel()
	for _, sigtermDuringStall := range []bool{false, true} {
		t.Run(fmt.Sprintf("sigterm=%t", sigtermDuringStall), func(t *testing.T) {
			t.Parallel()
			env := projtest.New(t)
			cfg := env.ConsumerConfig("projector")
			w := publishedOwner(t, env, 3*cfg.BatchSize)
			waiting, unlock := lockCollection(t, env, env.Control, readmodel.CollTodos)

			cfg.AckWait = 3 * time.Second
			cfg.WriteTimeout = time.Second // the batch in hand is held, retried, kept in progress
			cfg.ShutdownTimeout = 30 * time.Second
			c := consumer.New(cfg, env.JS, env.Store, metrics.New(prometheus.NewRegistry()), env.Log)
			ictx := sharedtest.Context(t, 2*time.Minute)
			cons, err := c.Ensure(ictx)
			if err != nil {
				t.Fatal(err)
			}
			sigterm := runUntilSigterm(t, c, unlock)
			info := func() *jetstream.ConsumerInfo {
				t.Helper()
				i, err := cons.Info(ictx)
				if err != nil {
					t.Fatal(err)
				}
				return i
			}

			// The batch in hand and the one fetched ahead; a fetch may answer with fewer
			// messages than a batch (the pull ahead expires quickly), so the second is
			// only known to hold some.
			sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
				n := info().NumAckPending
				return waiting() && n > cfg.BatchSize, fmt.Sprintf("%d messages delivered and unacknowledged, want a batch and more", n)
			})
			held := time.Now()
			sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
				return time.Since(held) > cfg.AckWait+time.Second, "the batches have not outlived AckWait yet"
			})

			if !sigtermDuringStall {
				unlock()
				sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
				sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
				if got := info(); got.NumRedelivered != 0 || got.Delivered.Consumer != uint64(len(w.Events)) {
					t.Fatalf("consumer delivered %d times for %d messages (%d redelivered): want each delivered once",
						got.Delivered.Consumer, len(w.Events), got.NumRedelivered)
				}
				return
			}
			if err := sigterm(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// Run flushed its acknowledgements to the server before returning; the server
			// applies them to the consumer's state from a queue of its own, so its info may
			// lag them. Nothing pulls any more: a message left unsettled stays pending and
			// fails the check below.
			var got *jetstream.ConsumerInfo
			sharedtest.Eventually(t, 10*time.Second, func() (bool, string) {
				got = info()
				return got.NumAckPending == 0, fmt.Sprintf("%d messages unacknowledged", got.NumAckPending)
			})
			if got.NumRedelivered != 0 || got.NumAckPending != 0 || got.Delivered.Consumer <= uint64(cfg.BatchSize) ||
				got.Delivered.Consumer > uint64(2*cfg.BatchSize) || got.AckFloor.Consumer != got.Delivered.Consumer {
				t.Fatalf("consumer delivered %d (%d redelivered, %d unacknowledged), acked up to %d: want the two batches delivered once and acked",
					got.Delivered.Consumer, got.NumRedelivered, got.NumAckPending, got.AckFloor.Consumer)
			}
			db, err := env.Store.Active(ictx)
			if err != nil {
				t.Fatal(err)
			}
			// The first event is the user's; the rest of the two batches are todos.
			if n, err := db.Collection(readmodel.CollTodos).CountDocuments(ictx, bson.D{}); err != nil || n != int64(got.Delivered.Consumer)-1 {
				t.Fatalf("%d todos in the read model (%v), want %d", n, err, got.Delivered.Consumer-1)
			}
		})
	}
}
