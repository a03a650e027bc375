// Package restore is the cut-over after the source of truth was restored from a
// backup (`todoctl restore-cutover`): the stream and the read model are replaced by
// empty ones and every aggregate's current state is emitted afresh, so that no version
// the restored database issues again can meet another content under that version.
//
// Why: the stream and the read model hold versions the restored database never saw (the
// lost timeline). New writes would reuse those numbers with other content, and the
// version guard would skip them as stale. With both emptied, nothing outranks the
// restored database any more; `resync --all` semantics then fill them, each aggregate at
// its current version, which is above nothing since nothing is left.
//
// Run it with every publisher and projector stopped (Run refuses while it sees one, see
// Live). It is safe to run again after a failure. The steps, in order:
//
//   - the stream is deleted and created again with the same configuration. A purge
//     would not do: nats-server keeps the duplicate window's message ids through a purge
//     (server/stream.go, purgeLocked leaves ddmap alone, v2.15.2), and the restored
//     outbox's unpublished rows were published in the lost timeline under the same event
//     ids, so the server would drop them as duplicates. Consumers go with the stream;
//     the projector creates its durables at start. The membership bucket is another
//     stream and stays.
//   - every dead letter is deleted: what they failed to apply is superseded by the
//     current state emitted below, and redriving one could bring back lost content.
//   - the active read-model database is dropped (documents and the projection
//     watermark); the projector creates its indexes, FerretDB's too, at start.
//   - every live aggregate is re-emitted through the outbox at its current version
//     (package resync), and every user deleted before the backup gets a tombstone
//     carrying their last stats snapshot, which verify compares. Unpublished outbox rows
//     of the restored database stay and are published into the new stream.
//
// The relational database's own publisher state (leases, outbox_published) needs
// nothing: leases are retaken when the publishers start, and outbox_published only
// serves the API's lost-commit probe of writes made after the restore.
//
// It is the one package of the API module that writes MongoDB (the read model is the
// projector's; internal/app's TestAPINeverWritesMongoDB lists the exception), and no part
// of the API service: only todoctl runs it.
package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/api/internal/postgres"
	"github.com/outboxtodo/outboxtodo/services/api/internal/resync"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Config names what the cut-over replaces and where it looks for live processes.
type Config struct {
	Stream string
	// MembersBucket is the projector replicas' membership bucket (the projector's package
	// partition).
	MembersBucket string
}

// ErrLive is returned by Run while a publisher or projector shows signs of life.
var ErrLive = errors.New("publishers or projectors are running; stop them first")

// Report says what Run did.
type Report struct {
	// StreamMessages is the message count of the stream replaced; StreamAbsent is set
	// when there was none (a run after a failure; the publisher creates it at start).
	StreamMessages uint64
	StreamAbsent   bool
	Database       string // the read-model database dropped
	DeadLetters    int64
	Resync         resync.Report
	DeletedUsers   int // tombstones emitted for users deleted before the backup
}

// Live lists the signs of a running publisher or projector: publisher replicas
// heartbeating or holding leases in the database, projector replicas in the
// membership bucket, pull requests waiting on the stream's consumers. Leases and
// heartbeats restored with the database expire after LEASE_TTL; a stopped projector's
// entries after MEMBER_TTL.
func Live(ctx context.Context, cfg Config, store *postgres.Store, js jetstream.JetStream) ([]string, error) {
	var live []string
	replicas, leases, err := store.LivePublishers(ctx)
	if err != nil {
		return nil, err
	}
	if replicas > 0 || leases > 0 {
		live = append(live, fmt.Sprintf("publisher: %d replicas heartbeating, %d outbox partitions leased", replicas, leases))
	}
	kv, err := js.KeyValue(ctx, cfg.MembersBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
	case err != nil:
		return nil, fmt.Errorf("membership bucket %s: %w", cfg.MembersBucket, err)
	default:
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return nil, fmt.Errorf("membership bucket %s: %w", cfg.MembersBucket, err)
		}
		var members []string
		for k := range keys.Keys() {
			if m, ok := strings.CutPrefix(k, "m."); ok {
				members = append(members, m)
			}
		}
		if len(members) > 0 {
			live = append(live, fmt.Sprintf("projector replicas in %s: %s", cfg.MembersBucket, strings.Join(members, ", ")))
		}
	}
	st, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return live, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Stream, err)
	}
	consumers := st.ListConsumers(ctx)
	for ci := range consumers.Info() {
		if ci.NumWaiting > 0 {
			live = append(live, fmt.Sprintf("consumer %s: %d pull requests waiting", ci.Name, ci.NumWaiting))
		}
	}
	if err := consumers.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", cfg.Stream, err)
	}
	return live, nil
}

// Run performs the cut-over (see the package comment), refusing with ErrLive while
// Live finds anything.
func Run(ctx context.Context, cfg Config, source *postgres.Store, js jetstream.JetStream, store *readmodel.Store) (Report, error) {
	var rep Report
	live, err := Live(ctx, cfg, source, js)
	if err != nil {
		return rep, err
	}
	if len(live) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrLive, strings.Join(live, "; "))
	}
	if rep.StreamMessages, rep.StreamAbsent, err = recreateStream(ctx, js, cfg.Stream); err != nil {
		return rep, err
	}
	// Before the drop: without a pointer the active database is the control database,
	// and dropping it would take the dead letters uncounted.
	if rep.DeadLetters, err = clearDeadLetters(ctx, store); err != nil {
		return rep, err
	}
	active, err := store.Active(ctx)
	if err != nil {
		return rep, err
	}
	rep.Database = active.Name()
	if err := active.Drop(ctx); err != nil {
		return rep, fmt.Errorf("drop read model %s: %w", active.Name(), err)
	}
	// The read model is empty: nothing to tombstone, every current version is new to it.
	if rep.Resync, err = resync.Run(ctx, source, nil, resync.Selection{All: true}); err != nil {
		return rep, err
	}
	rep.DeletedUsers, err = emitDeletedUsers(ctx, source)
	return rep, err
}

// clearDeadLetters deletes every dead letter of the control database (collection
// readmodel.CollDeadLetters, which the projector writes), and returns how many.
func clearDeadLetters(ctx context.Context, store *readmodel.Store) (int64, error) {
	res, err := store.Control().Collection(readmodel.CollDeadLetters).DeleteMany(ctx, bson.D{})
	if err != nil {
		return 0, fmt.Errorf("clear dead letters: %w", err)
	}
	return res.DeletedCount, nil
}

func recreateStream(ctx context.Context, js jetstream.JetStream, name string) (msgs uint64, absent bool, _ error) {
	st, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("stream %s: %w", name, err)
	}
	info := st.CachedInfo()
	if err := js.DeleteStream(ctx, name); err != nil {
		return 0, false, fmt.Errorf("delete stream %s: %w", name, err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		return 0, false, fmt.Errorf("create stream %s again (its configuration: %+v): %w", name, info.Config, err)
	}
	return info.State.Msgs, false, nil
}

// emitDeletedUsers writes a user.deleted for every user the restored database shows
// deleted (a user_stats row marked deleted, no user row), so that the new stream and
// read model hold their last stats snapshot. Its version is above every outbox row of
// the user, so it neither collides with one nor loses to an unpublished deletion; the
// source never issues a version for a deleted user again, and nothing older is left in
// the new stream.
func emitDeletedUsers(ctx context.Context, source *postgres.Store) (int, error) {
	users, err := source.DeletedUsers(ctx)
	if err != nil {
		return 0, err
	}
	const batch = 200
	for i := 0; i < len(users); i += batch {
		events := make([]event.Envelope, 0, batch)
		for _, u := range users[i:min(i+batch, len(users))] {
			now, v := time.Now(), u.Newest+1
			e, err := event.NewTombstone(event.UserDeleted, u.ID, u.ID, v, now, event.TraceContext{RequestID: "restore-cutover"})
			if err != nil {
				return i, err
			}
			events = append(events, e)
		}
		if err := source.InTx(ctx, func(tx *postgres.Tx) error { return tx.Emit(ctx, events...) }); err != nil {
			return i, fmt.Errorf("emit deleted users: %w", err)
		}
	}
	return len(users), nil
}
