package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/report"
)

const testPartitions = 4

// partitioned is a stream partitioned as the publisher makes it, with a durable per
// partition named as the projector names them, and a stand-in projector that consumes
// every durable and acknowledges what it gets.
type partitioned struct {
	js    jetstream.JetStream
	parts *partitionSet

	mu        sync.Mutex
	delivered int
}

func newPartitioned(t *testing.T) *partitioned {
	t.Helper()
	srv := natsserver.NewTest(t, nil)
	_, js := natsserver.Connect(t, srv.ClientURL())
	ctx := t.Context()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{event.StreamSubjects(event.DefaultSubjectPrefix)},
		SubjectTransform: event.PartitionTransform(event.DefaultSubjectPrefix, testPartitions)})
	if err != nil {
		t.Fatal(err)
	}
	p := &partitioned{js: js}
	standIn, _ := natsserver.Connect(t, srv.ClientURL())
	for i := range testPartitions {
		cfg := jetstream.ConsumerConfig{Durable: fmt.Sprintf("proj-p%d", i), AckPolicy: jetstream.AckExplicitPolicy,
			FilterSubject: event.PartitionFilter(event.DefaultSubjectPrefix, i)}
		if _, err := s.CreateOrUpdateConsumer(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		// One pull that never expires and asks for no heartbeat: a durable resumed
		// with ResumeConsumer would deliver nothing more to it, as to a projector's
		// fetch already waiting when the pause ends.
		sub, err := standIn.Subscribe(nats.NewInbox(), func(m *nats.Msg) {
			if m.Header.Get("Status") != "" {
				return
			}
			p.mu.Lock()
			p.delivered++
			p.mu.Unlock()
			_ = m.Ack()
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := standIn.PublishRequest(fmt.Sprintf("$JS.API.CONSUMER.MSG.NEXT.EVENTS.%s", cfg.Durable), sub.Subject, []byte(`{"batch":100000}`)); err != nil {
			t.Fatal(err)
		}
	}
	pc, _ := natsserver.Connect(t, srv.ClientURL())
	env := []string{"STREAM_NAME=EVENTS", "SUBJECT_PREFIX=" + event.DefaultSubjectPrefix, "CONSUMER_NAME=proj"}
	if p.parts, err = newPartitionSet(ctx, pc, env); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *partitioned) deliveries() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delivered
}

// publish puts n events of as many owners into the stream, as the publisher does.
func (p *partitioned) publish(ctx context.Context, n int) (int, error) {
	for i := range n {
		if _, err := p.js.Publish(ctx, fmt.Sprintf("%s.todo.%s.%s", event.DefaultSubjectPrefix, uuid.New(), uuid.New()), []byte("{}")); err != nil {
			return i, err
		}
	}
	return n, nil
}

func testRunner(p *partitionSet) *runner {
	return &runner{log: slog.New(slog.DiscardHandler), res: &report.Results{}, parts: p}
}

// The partition durables are read from the stream and the projector's environment.
func TestNewPartitionSet(t *testing.T) {
	t.Parallel()
	p := newPartitioned(t)
	if p.parts.partitions != testPartitions || len(p.parts.durables) != testPartitions || p.parts.durables["proj-p3"] != 3 {
		t.Fatalf("partitions %d, durables %v", p.parts.partitions, p.parts.durables)
	}
}

// A backlog is written while the partitions' durables are paused (the projector, here
// a stand-in, gets none of it), waited for in the durables themselves, and timed from
// the resume until the durables have nothing pending or unacknowledged.
func TestPausedBacklog(t *testing.T) {
	t.Parallel()
	p := newPartitioned(t)
	ctx := t.Context()
	// Delivered and acknowledged before: a backlog counts only what it wrote. The
	// stand-in's count is waited for too: the server tells its consumers of a stored
	// message on a goroutine of its own, so their pending count can read 0 for a
	// moment after the publish was acknowledged, and those events then come later.
	const earlier = 10
	if _, err := p.publish(ctx, earlier); err != nil {
		t.Fatal(err)
	}
	if _, err := p.parts.waitState(ctx, time.Minute, func(s durablesState) bool {
		return s.unsettled == 0 && p.deliveries() == earlier
	}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	before := p.deliveries()
	atResume := -1
	bt, err := testRunner(p.parts).pausedBacklog(ctx, time.Minute, func(ctx context.Context) (int, error) {
		return p.publish(ctx, n)
	}, func() { atResume = p.deliveries() - before })
	if err != nil {
		t.Fatal(err)
	}
	if atResume != 0 {
		t.Errorf("%d events delivered while the durables were paused", atResume)
	}
	if bt.events != n || bt.pending != n || !bt.resumed || bt.apply <= 0 {
		t.Errorf("timing = %+v, want %d events all pending at the resume", bt, n)
	}
	if got := p.deliveries() - before; got < n {
		t.Errorf("%d of %d events delivered after the drain", got, n)
	}
	if s, err := p.parts.state(ctx); err != nil || s != (durablesState{unsettled: 0, unpaused: testPartitions}) {
		t.Errorf("after the drain: %+v, %v; want nothing unsettled and every durable resumed", s, err)
	}
}

// A durable whose pause is lifted during the backlog (resumed by someone else, or
// deleted and created anew) is refused, not timed half-applied, and the other durables
// are resumed.
func TestPausedBacklogRefusesLiftedPause(t *testing.T) {
	t.Parallel()
	p := newPartitioned(t)
	ctx := t.Context()
	bt, err := testRunner(p.parts).pausedBacklog(ctx, time.Minute, func(ctx context.Context) (int, error) {
		if _, err := p.js.ResumeConsumer(ctx, "EVENTS", "proj-p1"); err != nil {
			return 0, err
		}
		return p.publish(ctx, 50)
	}, func() { t.Error("resumed on a backlog whose pause was lifted") })
	if err == nil || !strings.Contains(err.Error(), "no longer paused") || bt.resumed {
		t.Fatalf("err = %v, timing %+v; want a refusal naming the lifted pause", err, bt)
	}
	if s, err := p.parts.state(ctx); err != nil || s.unpaused != testPartitions {
		t.Errorf("after the refusal: %+v, %v; want every durable resumed", s, err)
	}
}

// A write that fails leaves the durables resumed and says how many events it wrote.
func TestPausedBacklogWriteFails(t *testing.T) {
	t.Parallel()
	p := newPartitioned(t)
	ctx := t.Context()
	boom := errors.New("boom")
	bt, err := testRunner(p.parts).pausedBacklog(ctx, time.Minute, func(context.Context) (int, error) { return 3, boom }, nil)
	if !errors.Is(err, boom) || bt.events != 3 || bt.resumed {
		t.Fatalf("err = %v, timing %+v", err, bt)
	}
	if s, err := p.parts.state(ctx); err != nil || s.unpaused != testPartitions {
		t.Errorf("after the failed write: %+v, %v; want every durable resumed", s, err)
	}
}
