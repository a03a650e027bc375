package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// SIGTERM (the end of Run's context) while the batch's writes are in flight: the
// writes finish, the batch is acknowledged, and nothing is delivered twice.
func TestShutdownFinishesBatchInHand(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := ownerWithTodos(t, 4)
	env.Publish(t, w.Events...)
	waiting, unlock := lockCollection(t, env, env.Control, readmodel.CollTodos)

	cfg := env.ConsumerConfig("projector")
	cfg.AckWait = time.Minute // no redelivery by expiry while the writes wait
	cfg.WriteTimeout = 30 * time.Second
	cfg.ShutdownTimeout = 30 * time.Second
	c := consumer.New(cfg, env.JS, env.Store, metrics.New(prometheus.NewRegistry()), env.Log)
	ctx, sigterm := context.WithCancel(context.Background())
	var runErr error
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		runErr = c.Run(ctx)
	}()
	t.Cleanup(func() {
		sigterm()
		unlock()
		<-stopped
	})

	projtest.Eventually(t, 60*time.Second, func() (bool, string) {
		return waiting(), "no todo write waiting"
	})
	sigterm()
	unlock()
	<-stopped
	if runErr != nil {
		t.Fatalf("Run: %v", runErr)
	}

	if ok, why := converged(env, w)(); !ok {
		t.Fatalf("read model after the shutdown: %s", why)
	}
	projtest.Eventually(t, 10*time.Second, drained(env, "projector"))
	ictx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := env.JS.Consumer(ictx, env.Stream, "projector")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ictx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Consumer != uint64(len(w.Events)) || info.AckFloor.Stream != uint64(len(w.Events)) {
		t.Fatalf("consumer delivered %d times for %d messages (%d redelivered), acked up to %d: want each delivered once and acked",
			info.Delivered.Consumer, len(w.Events), info.NumRedelivered, info.AckFloor.Stream)
	}
}
