// Package erasure removes a deleted user's personal data from the stream and the read
// model once their deletion is applied, so that an erasure request can be honoured.
//
// What holds it: every event of a user's own subject (user.created, user.updated) carries
// their email and display name, and every event of their todos' subjects carries the
// todos' content. The stream keeps the newest STREAM_MAX_MSGS_PER_SUBJECT messages of each
// subject with no age limit, so without this they stay forever. In the read model a
// tombstone already unsets those fields; dead letters keep whole messages.
//
// How: the Eraser consumes the user subjects with a durable of its own. For each
// user.deleted it waits until the read model shows the deletion applied (the user's
// tombstone at that version or newer, and no live todo of theirs left), then, for every
// subject of the user (their own and each of their todos', in both the partitioned and
// the legacy layout), erases every message but the subject's tombstone, and deletes the
// user's dead letters. Each subject keeps its newest tombstone, so a rebuild still
// recreates the deletion (and the owner's last stats snapshot it carries). The message is
// acknowledged only then: the durable's ack floor is the record of what was erased; a
// failure or a deletion not yet applied is retried after Config.Retry.
//
// Why per message with SecureDeleteMsg rather than a purge with keep: a purge's keep
// counts the messages of its whole filter, not per subject, so a wildcard filter cannot
// keep each subject's tombstone; and nats-server's file store (v2.15.2, PurgeEx and
// removeMsg in server/filestore.go) marks purged and deleted messages as gone in their
// block and leaves their bytes on disk until the block is compacted or expires, while a
// secure delete overwrites them.
//
// A user.created or user.updated that reaches the stream after the user's tombstone (a
// publisher sending an old row again after the duplicate window) is skipped by the
// projector's version guard; the Eraser sees it too and erases the user again, which
// removes it. Old messages of a deleted user's todos that arrive that way are not
// looked for.
package erasure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/deadletter"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Config tunes an Eraser.
type Config struct {
	Stream        string
	SubjectPrefix string
	// Durable names the Eraser's consumer; keep it apart from the projector's own
	// durables (see event.IsConsumerOf).
	Durable string
	// Retry is the pause before a deletion not applied yet, or an erasure that failed,
	// is looked at again; 0 is DefaultRetry.
	Retry time.Duration
	// Timeout bounds the erasure of one user; 0 is DefaultTimeout.
	Timeout time.Duration
}

// Defaults of Config.
const (
	DefaultRetry = 5 * time.Second
	// A secure delete rewrites the message in its block: the 2,001 messages of a user
	// with 1,000 todos took 11.7-15.4 s on this machine (0.5 s with plain deletes), so
	// a user with 10,000 todos takes about two minutes.
	DefaultTimeout = 10 * time.Minute
)

// ErrNotApplied is returned by Erase while the read model does not show the user's
// deletion applied yet.
var ErrNotApplied = errors.New("deletion not applied to the read model yet")

// Eraser erases deleted users' personal data; see the package comment.
type Eraser struct {
	cfg   Config
	js    jetstream.JetStream
	store *readmodel.Store
	dead  *deadletter.Store
	log   *slog.Logger
}

// New returns an Eraser of the stream and the read model behind store.
func New(cfg Config, js jetstream.JetStream, store *readmodel.Store, log *slog.Logger) *Eraser {
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return &Eraser{cfg: cfg, js: js, store: store, dead: deadletter.New(store.Control()), log: log}
}

// Run consumes the user subjects until ctx ends, erasing each deleted user once their
// deletion is applied. It returns when ctx ends; failures are logged and retried.
func (e *Eraser) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := e.consume(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("erasure consumer stopped, restarting", "error", err, "after", e.cfg.Retry)
			select {
			case <-ctx.Done():
			case <-time.After(e.cfg.Retry):
			}
		}
	}
}

func (e *Eraser) consume(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := e.js.CreateOrUpdateConsumer(cctx, e.cfg.Stream, jetstream.ConsumerConfig{
		Durable:     e.cfg.Durable,
		Description: "Erases deleted users' personal data (projector, package erasure)",
		FilterSubjects: []string{
			"*." + e.cfg.SubjectPrefix + "." + event.AggregateUser + ".>",
			e.cfg.SubjectPrefix + "." + event.AggregateUser + ".>",
		},
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       e.cfg.Timeout + 30*time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 16,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", e.cfg.Durable, e.cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return fmt.Errorf("consume %s: %w", e.cfg.Durable, err)
	}
	// Next blocks until a message comes: ctx's end stops the iterator, which ends it.
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-done:
		}
		it.Stop()
	}()
	defer func() { close(done); <-stopped }()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("next message of %s: %w", e.cfg.Durable, err)
		}
		e.handle(ctx, msg)
	}
}

// handle erases the user of a user.deleted, and again the user of an older event that
// arrived after their tombstone; any other message is acknowledged as it is.
func (e *Eraser) handle(ctx context.Context, msg jetstream.Msg) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	ev, err := event.Decode(msg.Data())
	if err != nil {
		// Not ours to judge: the projector dead-letters it.
		_ = msg.Ack()
		return
	}
	version := ev.Version
	if ev.Type != event.UserDeleted {
		tomb, err := e.tombstoneVersion(ctx, ev.AggregateID)
		if err != nil {
			e.retry(msg, ev.AggregateID, err)
			return
		}
		if tomb <= ev.Version {
			_ = msg.Ack()
			return
		}
		version = tomb
	}
	rep, err := e.Erase(ctx, ev.AggregateID, version)
	if err != nil {
		e.retry(msg, ev.AggregateID, err)
		return
	}
	e.log.Info("erased a deleted user's personal data", "user", ev.AggregateID, "subjects", rep.Subjects,
		"messages", rep.Messages, "dead_letters", rep.DeadLetters)
	if err := msg.Ack(); err != nil {
		e.log.Warn("erasure not acknowledged; it runs again", "user", ev.AggregateID, "error", err)
	}
}

func (e *Eraser) retry(msg jetstream.Msg, user uuid.UUID, err error) {
	if !errors.Is(err, ErrNotApplied) {
		e.log.Warn("erasure failed, retrying", "user", user, "error", err, "after", e.cfg.Retry)
	}
	_ = msg.NakWithDelay(e.cfg.Retry)
}

// Report counts what Erase removed.
type Report struct {
	Subjects    int // subjects of the user left with their tombstone alone
	Messages    int // stream messages erased
	DeadLetters int // dead letters deleted
}

// Erase removes the personal data of user, deleted at version: every stream message of
// their subjects but each subject's newest tombstone, and their dead letters. It
// returns ErrNotApplied while the read model does not show the deletion. It is
// idempotent.
func (e *Eraser) Erase(ctx context.Context, user uuid.UUID, version int64) (Report, error) {
	var rep Report
	if err := e.applied(ctx, user, version); err != nil {
		return rep, err
	}
	st, err := e.js.Stream(ctx, e.cfg.Stream)
	if err != nil {
		return rep, fmt.Errorf("stream %s: %w", e.cfg.Stream, err)
	}
	for _, filter := range []string{"*." + event.OwnerFilter(e.cfg.SubjectPrefix, user), event.OwnerFilter(e.cfg.SubjectPrefix, user)} {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return rep, fmt.Errorf("subjects of %s: %w", filter, err)
		}
		subjects, erased, err := eraseSubjects(ctx, st, info.State.Subjects)
		rep.Subjects += subjects
		rep.Messages += erased
		if err != nil {
			return rep, err
		}
	}
	n, err := e.dead.DeleteOwner(ctx, user)
	if err != nil {
		return rep, err
	}
	rep.DeadLetters = n
	return rep, nil
}

// applied tells whether the read model shows user deleted at version or later, with
// none of their todos left live.
func (e *Eraser) applied(ctx context.Context, user uuid.UUID, version int64) error {
	tomb, err := e.tombstoneVersion(ctx, user)
	if err != nil {
		return err
	}
	if tomb < version {
		return fmt.Errorf("user %s: %w", user, ErrNotApplied)
	}
	db, err := e.store.Active(ctx)
	if err != nil {
		return err
	}
	live, err := db.Collection(readmodel.CollTodos).CountDocuments(ctx, bson.D{{Key: "user_id", Value: user.String()}, readmodel.NotDeleted})
	if err != nil {
		return fmt.Errorf("count live todos of %s: %w", user, err)
	}
	if live > 0 {
		return fmt.Errorf("user %s has %d live todos: %w", user, live, ErrNotApplied)
	}
	return nil
}

// tombstoneVersion is the version of user's tombstone in the read model, 0 when the
// user is live or absent.
func (e *Eraser) tombstoneVersion(ctx context.Context, user uuid.UUID) (int64, error) {
	db, err := e.store.Active(ctx)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Deleted bool  `bson:"deleted"`
		Version int64 `bson:"version"`
	}
	err = db.Collection(readmodel.CollUsers).FindOne(ctx, bson.D{{Key: "_id", Value: user.String()}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) || (err == nil && !doc.Deleted) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read user %s: %w", user, err)
	}
	return doc.Version, nil
}

// subjectConcurrency bounds the subjects erased at once: two overlap one's round trips
// with the other's. More would not help: the server runs a stream's secure deletes one
// at a time (about 6 ms each here), and they would queue the stream's publishes.
const subjectConcurrency = 2

// eraseSubjects runs eraseSubject on each subject (with its message count), a few at a
// time, and returns how many subjects it finished and messages it erased.
func eraseSubjects(ctx context.Context, st jetstream.Stream, counts map[string]uint64) (subjects, erased int, _ error) {
	var (
		mu     sync.Mutex
		first  error
		failed int
		wg     sync.WaitGroup
		sem    = make(chan struct{}, subjectConcurrency)
	)
	for subject, n := range counts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m, err := eraseSubject(ctx, st, subject, n)
			mu.Lock()
			defer mu.Unlock()
			erased += m
			if err != nil {
				if failed++; first == nil {
					first = err
				}
				return
			}
			subjects++
		})
	}
	wg.Wait()
	if first != nil {
		return subjects, erased, fmt.Errorf("%d of %d subjects not erased, one: %w", failed, len(counts), first)
	}
	return subjects, erased, nil
}

// eraseSubject securely deletes every message of subject (n messages) but its newest
// tombstone, and returns how many it deleted. A subject without a tombstone is the
// deletion not yet in the stream: ErrNotApplied.
func eraseSubject(ctx context.Context, st jetstream.Stream, subject string, n uint64) (int, error) {
	if n == 1 {
		last, err := st.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return 0, fmt.Errorf("last message of %s: %w", subject, err)
		}
		if isTombstone(last) {
			return 0, nil
		}
		return 0, fmt.Errorf("%s ends without a tombstone: %w", subject, ErrNotApplied)
	}
	type msgInfo struct {
		seq     uint64
		tomb    bool
		version int64
	}
	var msgs []msgInfo
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read %s from %d: %w", subject, seq, err)
		}
		mi := msgInfo{seq: m.Sequence}
		if ev, err := event.Decode(m.Data); err == nil {
			mi.tomb, mi.version = event.IsDelete(ev.Type), ev.Version
		}
		msgs = append(msgs, mi)
		seq = m.Sequence + 1
	}
	keep := -1
	for i, m := range msgs {
		if m.tomb && (keep < 0 || m.version >= msgs[keep].version) {
			keep = i
		}
	}
	if keep < 0 {
		return 0, fmt.Errorf("%s holds no tombstone: %w", subject, ErrNotApplied)
	}
	erased := 0
	for i, m := range msgs {
		if i == keep {
			continue
		}
		if err := st.SecureDeleteMsg(ctx, m.seq); err != nil && !isNoMessage(err) {
			return erased, fmt.Errorf("erase %s sequence %d: %w", subject, m.seq, err)
		}
		erased++
	}
	return erased, nil
}

func isTombstone(m *jetstream.RawStreamMsg) bool {
	ev, err := event.Decode(m.Data)
	return err == nil && event.IsDelete(ev.Type)
}

// isNoMessage recognizes the server's answer to deleting a message another replica
// deleted first: "sequence N not found" or "no message found", by the moment it came
// (the client flattens the server's error into the text).
func isNoMessage(err error) bool {
	return errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) &&
		(strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "no message found"))
}
