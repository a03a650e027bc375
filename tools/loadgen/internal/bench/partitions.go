package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
)

// partitionSet is the stream's partitions and the pinned durables that devstack's
// projector, and the replicas the replicas phase starts, consume them through
// (<CONSUMER_NAME>-p<i>). The phases that time the projector on a backlog pause these
// durables, not the projector's process: a process stopped longer than MEMBER_TTL
// loses its claims on resuming, and the drain would time a rebalance.
type partitionSet struct {
	env        []string // the environment devstack gave its projector
	nc         *nats.Conn
	js         jetstream.JetStream
	stream     string
	durables   map[string]int // partition durable -> partition
	partitions int
}

// openPartitions reads the environment of devstack's projector (pid), connects to
// NATS and reads the stream's partition count.
func openPartitions(ctx context.Context, natsURL string, pid int) (*partitionSet, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, fmt.Errorf("the projector's environment: %w", err)
	}
	env := environ(b)
	nc, err := nats.Connect(natsURL, nats.Name("loadgen"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	p, err := newPartitionSet(ctx, nc, env)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return p, nil
}

// newPartitionSet reads the partitions of the stream the projector environment env
// names, on nc, which the set then owns.
func newPartitionSet(ctx context.Context, nc *nats.Conn, env []string) (*partitionSet, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p := &partitionSet{env: env, nc: nc, js: js, stream: envValue(env, "STREAM_NAME", "TODO_EVENTS")}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, p.stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", p.stream, err)
	}
	prefix := envValue(env, "SUBJECT_PREFIX", event.DefaultSubjectPrefix)
	if p.partitions = event.Partitions(s.CachedInfo().Config, prefix); p.partitions == 0 {
		return nil, fmt.Errorf("stream %s has no partition transform: its projectors cannot share it", p.stream)
	}
	durable := envValue(env, "CONSUMER_NAME", "projector")
	p.durables = map[string]int{}
	for i := range p.partitions {
		p.durables[fmt.Sprintf("%s-p%d", durable, i)] = i
	}
	return p, nil
}

func (p *partitionSet) close() { p.nc.Close() }

// streamPartitions opens the stream's partitions once, for the phases that pause
// them (the phases run one at a time); teardown closes them.
func (r *runner) streamPartitions(ctx context.Context) (*partitionSet, error) {
	if r.parts == nil {
		p, err := openPartitions(ctx, r.st.natsURL, r.st.procs["projector"])
		if err != nil {
			return nil, err
		}
		r.parts = p
	}
	return r.parts, nil
}

// consumers calls each with the info of every partition's durable.
func (p *partitionSet) consumers(ctx context.Context, each func(partition int, ci *jetstream.ConsumerInfo)) error {
	s, err := p.js.Stream(ctx, p.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", p.stream, err)
	}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		if i, ok := p.durables[ci.Name]; ok {
			each(i, ci)
		}
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("consumers of %s: %w", p.stream, err)
	}
	return nil
}

// durablesState is the partitions' durables summed: what they have not delivered or
// not had acknowledged, and how many of them are not paused.
type durablesState struct {
	unsettled uint64
	unpaused  int
}

func (p *partitionSet) state(ctx context.Context) (durablesState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var s durablesState
	err := p.consumers(ctx, func(_ int, ci *jetstream.ConsumerInfo) {
		s.unsettled += ci.NumPending + uint64(ci.NumAckPending)
		if !ci.Paused {
			s.unpaused++
		}
	})
	return s, err
}

// waitState polls the partitions' durables every replicaPoll until their state
// satisfies done, for at most bound, and returns the last state.
func (p *partitionSet) waitState(ctx context.Context, bound time.Duration, done func(durablesState) bool) (durablesState, error) {
	last, ok, err := poll(ctx, bound, replicaPoll, p.state, done)
	if !ok {
		return last, fmt.Errorf("not within %s (%d pending or unacknowledged at the last look; %v)", bound, last.unsettled, err)
	}
	return last, nil
}

// pause pauses (until, or resumes when until is zero) every partition's durable, and
// counts those the server held paused when it answered.
func (p *partitionSet) pause(ctx context.Context, until time.Time) (paused int, _ error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for name := range p.durables {
		var resp *jetstream.ConsumerPauseResponse
		var err error
		if until.IsZero() {
			resp, err = p.js.ResumeConsumer(ctx, p.stream, name)
		} else {
			resp, err = p.js.PauseConsumer(ctx, p.stream, name, until)
		}
		if err != nil {
			return paused, fmt.Errorf("pause %s until %v: %w", name, until, err)
		}
		if resp.Paused {
			paused++
		}
	}
	return paused, nil
}

// backlogTiming is what pausedBacklog measured.
type backlogTiming struct {
	events                int           // written
	write, publish, apply time.Duration // each step's time
	pending               uint64        // in the durables at the resume
	resumed               bool          // the durables were resumed on the whole backlog
}

// pausedBacklog times the projector (every live replica) on a backlog of its own: it
// pauses the partitions' durables, lets write put events into the outbox (write
// returns how many) and waits until the publisher has moved them all into the paused
// durables, then resumes the durables and times the drain until they have nothing
// pending or unacknowledged. bound bounds the publish and the drain each; resuming,
// when not nil, is called just before the resume.
//
// Published is read in the durables themselves: /health/sync, whose report is up to
// 1 s old, could still show the outbox empty from before the write. A paused durable
// delivers nothing, not even to a fetch the projector had open when it was paused.
func (r *runner) pausedBacklog(ctx context.Context, bound time.Duration, write func(ctx context.Context) (int, error), resuming func()) (backlogTiming, error) {
	var bt backlogTiming
	p, err := r.streamPartitions(ctx)
	if err != nil {
		return bt, err
	}
	// Paused for a bounded time, so that a run that dies here leaves nothing paused.
	until := time.Now().Add(3 * bound)
	resumed := false // a pause that fails half-way is undone too
	defer func() {
		if !resumed {
			if _, err := p.pause(context.WithoutCancel(ctx), time.Time{}); err != nil {
				r.log.Warn("resume the projector's durables", "error", err)
			}
		}
	}()
	t := time.Now()
	if n, err := p.pause(ctx, until); err != nil || n < len(p.durables) {
		return bt, fmt.Errorf("%d of the %d partitions' durables paused (%v)", n, len(p.durables), err)
	}
	pauseTook := time.Since(t)
	t = time.Now()
	bt.events, err = write(ctx)
	bt.write = time.Since(t)
	if err != nil {
		return bt, fmt.Errorf("write %d events: %w", bt.events, err)
	}
	if bt.events == 0 {
		return bt, errors.New("nothing to write")
	}
	t = time.Now()
	s, err := p.waitState(ctx, bound, func(s durablesState) bool { return s.unpaused > 0 || s.unsettled >= uint64(bt.events) })
	switch {
	case err != nil:
		return bt, fmt.Errorf("%d events not all published into the paused durables: %w", bt.events, err)
	case s.unpaused > 0:
		// The server keeps the pause of a durable created again over itself, but a
		// durable deleted and created anew starts unpaused, and anyone may resume one:
		// the drain would be timed from a backlog partly applied.
		why := "deleted and created anew, or resumed, by someone else"
		if time.Now().After(until) {
			why = fmt.Sprintf("the pause of %s ran out", 3*bound)
		}
		return bt, fmt.Errorf("%d of the %d partitions' durables no longer paused (%s)", s.unpaused, len(p.durables), why)
	}
	bt.publish, bt.pending = time.Since(t), s.unsettled
	if resuming != nil {
		resuming()
	}
	// The pause is ended by moving its end to one instant just ahead, not by
	// ResumeConsumer: after a resume the server delivers nothing to a fetch already
	// waiting, only to the projector's next one, up to FETCH_WAIT later, while a pause
	// that runs out makes it deliver at once. Well ahead of what the first pause took,
	// so that every durable's end is moved before it comes (twice and 100 ms was short
	// for one of 16 on a loaded machine); the drain is timed from the instant, so the
	// margin costs the run a moment, not the figure.
	at := time.Now().Add(4*pauseTook + 500*time.Millisecond)
	held, err := p.pause(ctx, at)
	if err != nil {
		return bt, err
	}
	resumed, bt.resumed = true, true
	if late := len(p.durables) - held; late > 0 {
		r.note("a projector backlog of %d events: %d of the %d durables were resumed after the instant timed from (the server was slow to answer): "+
			"they waited for the projector's next fetch, up to FETCH_WAIT longer", bt.events, late, len(p.durables))
	}
	r.log.Info("projector resumed on a backlog", "events", bt.events, "pending", bt.pending)
	if _, err := p.waitState(ctx, bound, func(s durablesState) bool { return s.unsettled == 0 }); err != nil {
		return bt, fmt.Errorf("%d events not applied: %w", bt.events, err)
	}
	bt.apply = time.Since(at)
	return bt, nil
}
