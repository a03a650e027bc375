package partition_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/consumer"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/partition"
	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

const durable = "projector"

// recorder keeps, per owner, the stream sequences of its applied events in the order
// the replicas applied them, and what each member applied.
type recorder struct {
	mu        sync.Mutex
	byOwner   map[uuid.UUID][]uint64
	byMember  map[string]int
	applies   map[uint64]int // stream sequence -> times applied
	redeliver []consumer.Applied
}

func newRecorder() *recorder {
	return &recorder{byOwner: map[uuid.UUID][]uint64{}, byMember: map[string]int{}, applies: map[uint64]int{}}
}

func (r *recorder) hook(member string) func([]consumer.Applied) {
	return func(as []consumer.Applied) {
		r.mu.Lock()
		defer r.mu.Unlock()
		// One batch's writes run concurrently: its events are ordered by sequence here.
		as = slices.Clone(as)
		slices.SortFunc(as, func(a, b consumer.Applied) int { return int(a.StreamSeq) - int(b.StreamSeq) })
		for _, a := range as {
			r.byMember[member]++
			r.applies[a.StreamSeq]++
			if a.Delivery > 1 {
				// Its first delivery was not applied (MongoDB rejected it, and it was
				// nacked) or not acknowledged: the owner's later events went on meanwhile,
				// and the version guard orders them.
				r.redeliver = append(r.redeliver, a)
				continue
			}
			r.byOwner[a.Event.OwnerID] = append(r.byOwner[a.Event.OwnerID], a.StreamSeq)
		}
	}
}

// inStreamOrder checks that each owner's events were applied in stream order, each
// once, on their first delivery (see hook).
func (r *recorder) inStreamOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for owner, seqs := range r.byOwner {
		if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Errorf("owner %s: events applied in the order %v, want stream order, each once", owner, seqs)
		}
	}
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applies)
}

func (r *recorder) of(member string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byMember[member]
}

// busyWorld is users writers with a few todos each, updated and some deleted.
func busyWorld(t *testing.T, users int) *projtest.World {
	w := projtest.NewWorld(t)
	for i := range users {
		u := w.CreateUser()
		for j := range 4 {
			td := w.CreateTodo(u, fmt.Sprintf("todo %d", j))
			w.SetCompleted(td, true)
			if j == 0 {
				w.SetCompleted(td, false)
			}
			if j == 3 {
				w.DeleteTodo(td)
			}
		}
		w.RenameUser(u, fmt.Sprintf("writer %d", i))
		if i%10 == 9 {
			w.DeleteUser(u)
		}
	}
	return w
}

// publishConcurrently publishes events from several writers at once, each owner's
// events in order from one writer, as the publisher's partitions do.
func publishConcurrently(env *projtest.Env, events []event.Envelope, writers int) (err error) {
	lanes := make([][]event.Envelope, writers)
	for _, e := range events {
		k := event.PartitionOf(e.OwnerID, writers)
		lanes[k] = append(lanes[k], e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, writers)
	for _, lane := range lanes {
		go func() {
			for _, e := range lane {
				b, err := e.Encode()
				if err == nil {
					msg := nats.NewMsg(event.Subject(projtest.Prefix, e))
					msg.Data = b
					msg.Header.Set(jetstream.MsgIDHeader, e.ID.String())
					_, err = env.JS.PublishMsg(ctx, msg)
				}
				if err != nil {
					errs <- fmt.Errorf("publish %s: %w", e.ID, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if e := <-errs; e != nil {
			err = e
		}
	}
	return err
}

// publishing publishes in the background; wait returns its error.
func publishing(env *projtest.Env, events []event.Envelope) (wait func() error) {
	done := make(chan error, 1)
	go func() { done <- publishConcurrently(env, events, 6) }()
	return func() error { return <-done }
}

// spread is a condition: the members hold every partition, each exactly once, and
// each member at least min of them.
func spread(members []*projtest.Member, min int) func() (bool, string) {
	return func() (bool, string) {
		seen := map[string]int{}
		var shares []int
		for _, m := range members {
			held := m.Group.Held()
			shares = append(shares, len(held))
			for _, u := range held {
				seen[u]++
			}
		}
		for i := range projtest.Partitions {
			if seen[fmt.Sprintf("p%d", i)] != 1 {
				return false, fmt.Sprintf("shares %v, holders of each unit %v", shares, seen)
			}
		}
		if len(seen) != projtest.Partitions || slices.Min(shares) < min {
			return false, fmt.Sprintf("shares %v, holders of each unit %v", shares, seen)
		}
		return true, ""
	}
}

// drained is a condition: every durable of the group has everything delivered and
// acknowledged.
func drained(env *projtest.Env) func() (bool, string) {
	return func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		units, err := partition.Durables(ctx, env.JS, env.Stream, durable)
		if err != nil {
			return false, err.Error()
		}
		pending, ackPending, _ := partition.Totals(units)
		return pending == 0 && ackPending == 0, fmt.Sprintf("pending %d, ack pending %d", pending, ackPending)
	}
}

// startGroup starts the servers and members of the group named names, their
// applied events recorded by a new recorder.
func startGroup(t *testing.T, names ...string) (*projtest.Env, *recorder, []*projtest.Member) {
	t.Helper()
	env := projtest.New(t)
	rec := newRecorder()
	return env, rec, startMembers(t, env, rec, names...)
}

func startMembers(t *testing.T, env *projtest.Env, rec *recorder, names ...string) []*projtest.Member {
	var out []*projtest.Member
	for _, name := range names {
		cfg := env.GroupConfig(durable, name)
		cfg.Consumer.Applied = rec.hook(name)
		out = append(out, env.StartMember(t, cfg))
	}
	return out
}

// Three replicas share the partitions, each applies a share, and each owner's events
// are applied in stream order.
func TestReplicasShareThePartitionsInStreamOrder(t *testing.T) {
	t.Parallel()
	env, rec, members := startGroup(t, "a", "b", "c")
	w := busyWorld(t, 60)
	sharedtest.Eventually(t, 20*time.Second, spread(members, 2))

	if err := publishConcurrently(env, w.Events, 6); err != nil {
		t.Fatal(err)
	}
	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env))
	rec.inStreamOrder(t)
	if got := rec.total(); got != len(w.Events) {
		t.Errorf("%d events applied, want %d", got, len(w.Events))
	}
	for _, name := range []string{"a", "b", "c"} {
		if rec.of(name) == 0 {
			t.Errorf("replica %s applied nothing", name)
		}
		t.Logf("replica %s applied %d of %d events", name, rec.of(name), len(w.Events))
	}
}

// A replica killed with a batch applied but not acknowledged: its partitions move to
// the others within the membership TTL, what it held comes back after AckWait, and a
// replica added afterwards takes a share. Nothing is lost and nothing stale remains.
func TestKilledReplicasPartitionsMove(t *testing.T) {
	t.Parallel()
	env, rec, members := startGroup(t, "a", "b")
	w := busyWorld(t, 60)

	// The victim stops inside its first batch, between the writes and the acks.
	inBatch, killed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	victimCfg := env.GroupConfig(durable, "victim")
	record := rec.hook("victim")
	victimCfg.Consumer.Applied = func(as []consumer.Applied) {
		record(as)
		once.Do(func() { close(inBatch); <-killed })
	}
	victim := env.StartMember(t, victimCfg)
	sharedtest.Eventually(t, 20*time.Second, spread(append(members, victim), 2))

	published := publishing(env, w.Events)
	select {
	case <-inBatch:
	case <-time.After(30 * time.Second):
		t.Fatal("the victim applied nothing")
	}
	killedAt := time.Now()
	go func() { victim.Kill() }()
	sharedtest.Eventually(t, 20*time.Second, func() (bool, string) {
		if victim.Group.Ready() {
			return false, "victim still a member"
		}
		return true, ""
	})
	close(killed)
	sharedtest.Eventually(t, 20*time.Second, spread(members, 3))
	if err := published(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the killed replica's partitions were held again %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	members = append(members, startMembers(t, env, rec, "d")...)
	sharedtest.Eventually(t, 20*time.Second, spread(members, 2))
	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env))
	if got := rec.total(); got != len(w.Events) {
		t.Errorf("%d distinct events applied, want %d", got, len(w.Events))
	}
}

// A replica stopped with SIGTERM finishes and acknowledges what it fetched and hands
// its partitions over: no event is delivered twice, and every owner's events are
// applied in stream order across the hand-over.
func TestSigtermHandsOverWithoutRedelivery(t *testing.T) {
	t.Parallel()
	env, rec, members := startGroup(t, "a", "b")
	w := busyWorld(t, 60)
	sharedtest.Eventually(t, 20*time.Second, spread(members, 4))

	half := len(w.Events) / 2
	if err := publishConcurrently(env, w.Events[:half], 6); err != nil {
		t.Fatal(err)
	}
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		return rec.of("b") > 0, "replica b has applied nothing yet"
	})
	published := publishing(env, w.Events[half:])
	members[1].Stop()
	if err := published(); err != nil {
		t.Fatal(err)
	}
	sharedtest.Eventually(t, 20*time.Second, spread(members[:1], projtest.Partitions))
	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, drained(env))

	rec.inStreamOrder(t)
	if got := rec.total(); got != len(w.Events) {
		t.Errorf("%d events applied, want %d", got, len(w.Events))
	}
	if len(rec.redeliver) > 0 {
		t.Errorf("%d events delivered again after the hand-over, first %+v", len(rec.redeliver), rec.redeliver[0])
	}
}

// An existing deployment: the stream of the unpartitioned layout and the durable
// "projector" with a backlog. The stream gains its partitions (the publisher is
// upgraded) and more events arrive in the new layout; the new replicas drain the
// legacy durable first, delete it and go on with the partitions: every event is
// applied once, each owner's in stream order, and the read model equals the source.
func TestUpgradeFromTheUnpartitionedLayout(t *testing.T) {
	t.Parallel()
	env := projtest.NewUnpartitioned(t)
	rec := newRecorder()
	w := busyWorld(t, 30)
	first := len(w.Events)

	// Today's projector: one durable over every subject, which has applied part of
	// the backlog when it is stopped.
	legacy := env.ConsumerConfig(durable)
	legacy.FilterSubjects = []string{event.StreamSubjects(projtest.Prefix)}
	legacy.Applied = rec.hook("old")
	env.Publish(t, w.Events...)
	old := env.Start(t, legacy)
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) { return rec.total() > 0, "nothing applied" })
	old.Stop()

	env.Partition(t, projtest.Partitions)
	for i := range 30 {
		for id, td := range w.Todos {
			if i%3 == 0 {
				w.SetCompleted(id, !td.Completed)
			}
			break
		}
		w.CreateTodo(w.CreateUser(), "after the upgrade")
	}
	env.Publish(t, w.Events[first:]...)

	members := startMembers(t, env, rec, "a", "b")
	sharedtest.Eventually(t, 90*time.Second, env.Converged(w))
	sharedtest.Eventually(t, 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := env.JS.Consumer(ctx, env.Stream, durable)
		return err != nil, fmt.Sprintf("legacy consumer still there (%v)", err)
	})
	sharedtest.Eventually(t, 20*time.Second, spread(members, 4))
	sharedtest.Eventually(t, 30*time.Second, drained(env))
	rec.inStreamOrder(t)
	if got := rec.total(); got != len(w.Events) {
		t.Errorf("%d events applied, want %d", got, len(w.Events))
	}
}
