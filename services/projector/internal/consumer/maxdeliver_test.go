package consumer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/metrics"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// The tests here each leave a message unsettled or nacked on its last allowed delivery
// in a different way, and check that it still ends up applied or dead-lettered: never
// dropped.

// lastDeliveryConfig makes every delivery the last allowed one, and brings an
// unsettled message back soon.
func lastDeliveryConfig(env *projtest.Env) consumer.Config {
	cfg := env.ConsumerConfig("projector")
	cfg.MaxDeliver = 1
	cfg.AckWait = 2 * time.Second
	cfg.WriteTimeout = time.Second
	return cfg
}

// publishedOwner is one user with n todos (projtest.UsersWithTodos), their events
// published.
func publishedOwner(t *testing.T, env *projtest.Env, n int) *projtest.World {
	w := projtest.UsersWithTodos(t, 1, n)
	env.Publish(t, w.Events...)
	return w
}

// refusedFirst starts servers whose stream holds, at sequence 1, an event MongoDB
// refuses (refusedTodo), then the events of one user with 2 todos, whose world it
// returns.
func refusedFirst(t *testing.T) (*projtest.Env, *projtest.World) {
	t.Helper()
	env := projtest.New(t)
	w := projtest.UsersWithTodos(t, 1, 2)
	env.Publish(t, refusedTodo(t, w).Events...)
	env.Publish(t, w.Events...)
	return env, w
}

// appliedOrDeadLettered reports whether each of events, published in order from stream
// sequence first on, is either in the read model (its aggregate at its version or a
// later one) or dead-lettered.
func appliedOrDeadLettered(t *testing.T, env *projtest.Env, events []event.Envelope, first uint64) func() (bool, string) {
	return func() (bool, string) {
		dead := map[uint64]bool{}
		for _, dl := range deadLetters(t, env) {
			dead[dl.StreamSeq] = true
		}
		got, err := env.ActiveSnapshot()
		if err != nil {
			return false, err.Error()
		}
		for i, e := range events {
			seq := first + uint64(i)
			if dead[seq] {
				continue
			}
			var have int64
			switch e.AggregateType {
			case event.AggregateUser:
				have = got.Users[e.AggregateID.String()].Version
			case event.AggregateTodo:
				have = got.Todos[e.AggregateID.String()].Version
			}
			if have < e.Version {
				return false, fmt.Sprintf("stream sequence %d (%s v%d) neither applied (read model at v%d) nor dead-lettered", seq, e.Type, e.Version, have)
			}
		}
		return true, ""
	}
}

func deadLettered(t *testing.T, env *projtest.Env, seq uint64) func() (bool, string) {
	return func() (bool, string) {
		dls := deadLetters(t, env)
		for _, dl := range dls {
			if dl.StreamSeq == seq {
				return true, ""
			}
		}
		return false, fmt.Sprintf("stream sequence %d not among %d dead letters", seq, len(dls))
	}
}

// A message MongoDB refuses, on its last delivery, whose dead-letter record fails
// too: it comes back and is dead-lettered once the record can be written.
func TestDeadLetterRecordFailsOnLastDelivery(t *testing.T) {
	t.Parallel()
	env, w := refusedFirst(t)
	attempts, restore := failWrites(t, env, env.Control, readmodel.CollDeadLetters)

	env.Start(t, lastDeliveryConfig(env))
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := attempts()
		return n > 0, fmt.Sprintf("%d dead-letter writes refused", n)
	})
	restore()
	sharedtest.Eventually(t, 60*time.Second, deadLettered(t, env, 1))
	sharedtest.Eventually(t, 30*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// A message that does not decode, whose dead-letter record fails, and the projector
// stops meanwhile: the next replica dead-letters it, with its decode error.
func TestUndecodableDeadLetterRecordFailsThenShutdown(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	ctx := sharedtest.Context(t, time.Minute)
	if _, err := env.JS.Publish(ctx, projtest.Prefix+".todo.x.y", []byte(`{"id": "not json`)); err != nil {
		t.Fatal(err)
	}
	attempts, restore := failWrites(t, env, env.Control, readmodel.CollDeadLetters)
	cfg := lastDeliveryConfig(env)
	r := env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := attempts()
		return n > 0, fmt.Sprintf("%d dead-letter writes refused", n)
	})
	r.Stop()
	restore()

	env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, deadLettered(t, env, 1))
	if dl := deadLetters(t, env)[0]; !strings.Contains(dl.Error, "malformed event") {
		t.Errorf("dead letter says %q, want the decode error", dl.Error)
	}
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// The projector stops while it holds a batch through a read-model outage, on the
// messages' last delivery: another replica later applies or dead-letters them.
func TestShutdownOnLastDeliveryKeepsMessages(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 3)
	cfg := lastDeliveryConfig(env)
	setBackendConnections(t, env, false)
	t.Cleanup(func() { setBackendConnections(t, env, true) })

	r := env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		n := testutil.ToFloat64(r.Metrics.Events.WithLabelValues(metrics.OutcomeFailed))
		return n >= float64(len(w.Events)), fmt.Sprintf("%v failed attempts", n)
	})
	r.Stop()
	setBackendConnections(t, env, true)

	env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, appliedOrDeadLettered(t, env, w.Events, 1))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// A replica takes the messages on their last delivery and dies before settling them:
// after AckWait another replica applies or dead-letters them.
func TestCrashOnLastDeliveryKeepsMessages(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := projtest.UsersWithTodos(t, 1, 3)
	cfg := lastDeliveryConfig(env)
	ctx := sharedtest.Context(t, time.Minute)
	cons, err := consumer.New(cfg, env.JS, env.Store, metrics.New(prometheus.NewRegistry()), env.Log).Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	env.Publish(t, w.Events...)
	if got := fetchUnsettled(t, cons, len(w.Events)); got != len(w.Events) {
		t.Fatalf("the crashing replica took %d messages, want %d", got, len(w.Events))
	}

	env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, appliedOrDeadLettered(t, env, w.Events, 1))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// fetchUnsettled takes up to n messages as a replica of the projector would, and
// settles none of them: the replica died.
func fetchUnsettled(t *testing.T, cons jetstream.Consumer, n int) int {
	t.Helper()
	// One pull can end short of messages the server is about to hand out: a message nacked
	// a moment ago comes back only once the server has processed the nak, apart from the
	// pull request, and a loaded server may take longer than one pull waits. Messages are
	// counted once each, by stream sequence, since one left unsettled past AckWait comes
	// again.
	taken := map[uint64]bool{}
	for deadline := time.Now().Add(20 * time.Second); len(taken) < n && time.Now().Before(deadline); {
		batch, err := cons.Fetch(n-len(taken), jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(consumer.PinGroup))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			taken[md.Sequence.Stream] = true
		}
	}
	return len(taken)
}

// The batch's write deadline is spent (here by a watermark write that waits) before
// the batch settles a message MongoDB refused on its last delivery: it is still
// dead-lettered.
func TestDeadlineSpentOnLastDeliveryStillDeadLetters(t *testing.T) {
	t.Parallel()
	env, w := refusedFirst(t)
	_, unlock := lockCollection(t, env, env.Control, readmodel.CollProjection)

	env.Start(t, lastDeliveryConfig(env))
	sharedtest.Eventually(t, 60*time.Second, deadLettered(t, env, 1))
	unlock()
	sharedtest.Eventually(t, 30*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
}

// A durable consumer created by an earlier release, on which JetStream itself drops a
// message after MaxDeliver deliveries, is updated in place at start: a message already
// delivered that often comes back and is applied.
func TestFiniteMaxDeliverConsumerUpgraded(t *testing.T) {
	t.Parallel()
	env := projtest.New(t)
	w := publishedOwner(t, env, 2)
	ctx := sharedtest.Context(t, time.Minute)
	cfg := env.ConsumerConfig("projector")
	cfg.AckWait = 2 * time.Second
	cfg.MaxDeliver = 5
	old, err := env.JS.CreateOrUpdateConsumer(ctx, env.Stream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        time.Minute, // the upgrade, not this expiry, brings them back
		MaxDeliver:     2,
		FilterSubjects: cfg.FilterSubjects,
		MaxAckPending:  cfg.MaxAckPending,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{consumer.PinGroup},
		PinnedTTL:      time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two deliveries each: the first nacked, the second left unsettled. The old durable
	// would drop every one of them at its next redelivery.
	batch, err := old.Fetch(len(w.Events), jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(consumer.PinGroup))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	if got := fetchUnsettled(t, old, len(w.Events)); got != len(w.Events) {
		t.Fatalf("second delivery of %d messages, want %d", got, len(w.Events))
	}

	env.Start(t, cfg)
	sharedtest.Eventually(t, 60*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env, "projector"))
	info, err := old.Info(sharedtest.Context(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxDeliver != -1 {
		t.Errorf("durable MaxDeliver = %d after the upgrade, want -1 (the projector counts deliveries itself)", info.Config.MaxDeliver)
	}
	if n := len(deadLetters(t, env)); n != 0 {
		t.Errorf("%d dead letters, want none: the third delivery is within MaxDeliver 5", n)
	}
}
