// Package audit judges a fault run once the system is quiet: every acknowledged write
// is in PostgreSQL, every failed write left nothing behind, and every outbox event is in
// the stream exactly once. (The read model is compared with PostgreSQL by todoctl's
// verify command.)
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/tools/chaos/internal/workload"
)

// Quiet is the state WaitQuiet waits for.
type Quiet struct {
	Unpublished int64 // outbox rows not yet published (parked ones included)
	Pending     uint64
	AckPending  int
}

func (q Quiet) done() bool { return q.Unpublished == 0 && q.Pending == 0 && q.AckPending == 0 }

// WaitQuiet polls until the outbox is drained and the durable consumer has nothing
// pending or unacknowledged, twice in a row, or timeout passes.
func WaitQuiet(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, stream, durable string, timeout time.Duration) (Quiet, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var q Quiet
	var lastErr error
	streak := 0
	for {
		var err error
		if q, err = quiet(ctx, pool, js, stream, durable); err != nil {
			lastErr, streak = err, 0
		} else if q.done() {
			if streak++; streak == 2 {
				return q, nil
			}
		} else {
			streak = 0
		}
		select {
		case <-ctx.Done():
			return q, fmt.Errorf("not quiet after %s: %+v (last error: %v)", timeout, q, lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func quiet(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, stream, durable string) (Quiet, error) {
	var q Quiet
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.QueryRow(qctx, `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&q.Unpublished); err != nil {
		return q, fmt.Errorf("count unpublished: %w", err)
	}
	// The projector's durables: one per stream partition (<durable>-p<i>), and
	// <durable> itself while it drains the unpartitioned layout.
	s, err := js.Stream(qctx, stream)
	if err != nil {
		return q, fmt.Errorf("stream %s: %w", stream, err)
	}
	found := false
	infos := s.ListConsumers(qctx)
	for info := range infos.Info() {
		if !event.IsConsumerOf(info.Name, durable) {
			continue
		}
		found = true
		q.Pending += info.NumPending
		q.AckPending += info.NumAckPending
	}
	if err := infos.Err(); err != nil {
		return q, fmt.Errorf("consumers of %s: %w", stream, err)
	}
	if !found {
		return q, fmt.Errorf("consumer %s: %w", durable, jetstream.ErrConsumerNotFound)
	}
	return q, nil
}

// Result is what Check found.
type Result struct {
	Events     int // outbox rows
	StreamMsgs int // messages in the stream
	Parked     int
	// Problems lists every broken expectation; empty means pass.
	Problems []string
}

type outboxRow struct {
	aggregateType string
	aggregateID   uuid.UUID
	version       int64
	eventType     string
}

// Check compares the ledger with PostgreSQL and the outbox with the stream.
func Check(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, stream string, writes []workload.Write) (Result, error) {
	var res Result
	outbox, err := loadOutbox(ctx, pool)
	if err != nil {
		return res, err
	}
	res.Events = len(outbox)
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL`).Scan(&res.Parked); err != nil {
		return res, fmt.Errorf("count parked: %w", err)
	}
	if res.Parked > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d outbox rows parked by the publisher", res.Parked))
	}
	state, err := loadVersions(ctx, pool)
	if err != nil {
		return res, err
	}
	res.Problems = append(res.Problems, checkWrites(writes, outbox, state)...)
	ids, markers, owners, err := readStream(ctx, js, stream)
	if err != nil {
		return res, err
	}
	leftovers, err := failedLeftovers(ctx, pool, writes, markers)
	if err != nil {
		return res, err
	}
	res.Problems = append(res.Problems, leftovers...)

	for _, n := range ids {
		res.StreamMsgs += n
	}
	erasable := erasable(outbox, owners)
	for id := range outbox {
		n := ids[id]
		if n == 1 || n == 0 && erasable[id] {
			continue
		}
		res.Problems = append(res.Problems, fmt.Sprintf("event %s is in the stream %d times", id, n))
	}
	for id, n := range ids {
		if _, ok := outbox[id]; !ok {
			res.Problems = append(res.Problems, fmt.Sprintf("stream message %s (%d times) has no outbox row", id, n))
		}
	}
	return res, nil
}

// erasable are the events the projector's erasure may have deleted from the stream:
// every event of a deleted user's aggregates (the user's own and their todos') but
// each aggregate's newest, its tombstone. owners maps aggregates to their owner, read
// from the stream, where the tombstones stay.
func erasable(outbox map[string]outboxRow, owners map[uuid.UUID]uuid.UUID) map[string]bool {
	deleted := map[uuid.UUID]bool{}
	newest := map[uuid.UUID]int64{}
	for _, r := range outbox {
		if r.eventType == event.UserDeleted {
			deleted[r.aggregateID] = true
		}
		newest[r.aggregateID] = max(newest[r.aggregateID], r.version)
	}
	out := map[string]bool{}
	for id, r := range outbox {
		if owner, ok := owners[r.aggregateID]; ok && deleted[owner] && r.version < newest[r.aggregateID] {
			out[id] = true
		}
	}
	return out
}

// loadOutbox reads every event: the outbox's rows and the records of those the
// publisher published (and moved out of the outbox).
func loadOutbox(ctx context.Context, pool *pgxpool.Pool) (map[string]outboxRow, error) {
	rows, err := pool.Query(ctx, `SELECT event_id, aggregate_type, aggregate_id, aggregate_version, event_type FROM outbox
UNION ALL SELECT event_id, aggregate_type, aggregate_id, aggregate_version, event_type FROM outbox_published`)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	out := map[string]outboxRow{}
	for rows.Next() {
		var (
			id uuid.UUID
			r  outboxRow
		)
		if err := rows.Scan(&id, &r.aggregateType, &r.aggregateID, &r.version, &r.eventType); err != nil {
			return nil, fmt.Errorf("scan outbox: %w", err)
		}
		out[id.String()] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// loadVersions is the current version of every live user and todo.
func loadVersions(ctx context.Context, pool *pgxpool.Pool) (map[uuid.UUID]int64, error) {
	rows, err := pool.Query(ctx, `SELECT id, version FROM users UNION ALL SELECT id, version FROM todos`)
	if err != nil {
		return nil, fmt.Errorf("read versions: %w", err)
	}
	defer rows.Close()
	out := map[uuid.UUID]int64{}
	for rows.Next() {
		var (
			id uuid.UUID
			v  int64
		)
		if err := rows.Scan(&id, &v); err != nil {
			return nil, fmt.Errorf("scan versions: %w", err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read versions: %w", err)
	}
	return out, nil
}

type aggKey struct {
	id      uuid.UUID
	version int64
}

// checkWrites holds acknowledged and failed writes against the outbox and the live
// rows. Every write is one outbox event of the aggregate at the version it answered.
func checkWrites(writes []workload.Write, outbox map[string]outboxRow, live map[uuid.UUID]int64) []string {
	var problems []string
	events := map[aggKey]string{}
	for _, r := range outbox {
		events[aggKey{r.aggregateID, r.version}] = r.eventType
	}
	type fate struct {
		maxAcked  int64
		deleted   bool // an acked delete of it, or of its user
		uncertain bool // an unknown write could have changed or deleted it
		keep      bool // a failed delete: must still exist
	}
	fates := map[uuid.UUID]*fate{}
	get := func(id uuid.UUID) *fate {
		if fates[id] == nil {
			fates[id] = &fate{}
		}
		return fates[id]
	}
	userOf := map[uuid.UUID]uuid.UUID{}
	for _, w := range writes {
		if w.Aggregate != uuid.Nil && w.User != uuid.Nil {
			userOf[w.Aggregate] = w.User
		}
		switch w.Outcome {
		case workload.Acked:
			if w.Version > 0 {
				if _, ok := events[aggKey{w.Aggregate, w.Version}]; !ok {
					problems = append(problems, fmt.Sprintf("acked %s of %s v%d has no outbox event", w.Kind, w.Aggregate, w.Version))
				}
			}
			f := get(w.Aggregate)
			f.maxAcked = max(f.maxAcked, w.Version)
			if w.Kind == workload.DeleteTodo || w.Kind == workload.DeleteUser {
				f.deleted = true
			}
		case workload.Unknown:
			if w.Aggregate != uuid.Nil {
				get(w.Aggregate).uncertain = true
			}
		case workload.Failed:
			if w.Kind == workload.DeleteTodo || w.Kind == workload.DeleteUser {
				get(w.Aggregate).keep = true
			}
		}
	}
	for id, f := range fates {
		owner := fates[userOf[id]]
		userGone := id != userOf[id] && owner != nil && owner.deleted
		userUncertain := id != userOf[id] && owner != nil && owner.uncertain
		v, exists := live[id]
		switch {
		case f.keep && !exists && !userGone && !userUncertain:
			problems = append(problems, fmt.Sprintf("%s: a failed delete deleted it", id))
		case f.deleted || userGone:
			if exists {
				problems = append(problems, fmt.Sprintf("%s: acked delete, still in PostgreSQL at v%d", id, v))
			}
		case f.uncertain || userUncertain || f.maxAcked == 0:
		case !exists:
			problems = append(problems, fmt.Sprintf("%s: acked v%d, missing from PostgreSQL", id, f.maxAcked))
		case v < f.maxAcked:
			problems = append(problems, fmt.Sprintf("%s: acked v%d, PostgreSQL has older v%d", id, f.maxAcked, v))
		}
	}
	return problems
}

// failedLeftovers finds failed writes whose unique marker reached the outbox (every
// committed write leaves an event there, with the whole document in its data).
// failedLeftovers finds the failed writes whose marker is in an event: in the payload
// of an outbox row, or, once published (the outbox keeps no payload of a published
// event), in a stream message (inStream).
func failedLeftovers(ctx context.Context, pool *pgxpool.Pool, writes []workload.Write, inStream map[string]bool) ([]string, error) {
	var markers []string
	for _, w := range writes {
		if w.Outcome == workload.Failed && w.Marker != "" {
			markers = append(markers, w.Marker)
		}
	}
	if len(markers) == 0 {
		return nil, nil
	}
	// The markers are whole emails and titles: match them against the payloads' fields
	// (a hash join), not as substrings of every payload (markers times rows).
	rows, err := pool.Query(ctx, `
		SELECT m FROM unnest($1::text[]) AS m
		WHERE m IN (SELECT payload->'data'->>'title' FROM outbox
		            UNION ALL SELECT payload->'data'->>'email' FROM outbox)`, markers)
	if err != nil {
		return nil, fmt.Errorf("look for failed writes: %w", err)
	}
	defer rows.Close()
	found := map[string]bool{}
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		found[m] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look for failed writes: %w", err)
	}
	var problems []string
	for _, m := range markers {
		if found[m] || inStream[m] {
			problems = append(problems, fmt.Sprintf("failed write %q left an outbox event", m))
		}
	}
	return problems, nil
}

// readStream counts the stream's messages by Nats-Msg-Id and collects the markers
// (titles and emails) of their events and the owner of each aggregate.
func readStream(ctx context.Context, js jetstream.JetStream, stream string) (ids map[string]int, markers map[string]bool, owners map[uuid.UUID]uuid.UUID, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("stream info: %w", err)
	}
	ids, markers, owners = map[string]int{}, map[string]bool{}, map[uuid.UUID]uuid.UUID{}
	if info.State.Msgs == 0 {
		return ids, markers, owners, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ordered consumer: %w", err)
	}
	for {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read stream: %w", err)
		}
		for m := range batch.Messages() {
			ids[m.Headers().Get(jetstream.MsgIDHeader)]++
			var body struct {
				AggregateID uuid.UUID `json:"aggregate_id"`
				OwnerID     uuid.UUID `json:"owner_id"`
				Data        struct {
					Title string `json:"title"`
					Email string `json:"email"`
				} `json:"data"`
			}
			if err := json.Unmarshal(m.Data(), &body); err != nil {
				return nil, nil, nil, fmt.Errorf("message %s: %w", m.Headers().Get(jetstream.MsgIDHeader), err)
			}
			markers[body.Data.Title], markers[body.Data.Email] = true, true
			owners[body.AggregateID] = body.OwnerID
			md, err := m.Metadata()
			if err != nil {
				return nil, nil, nil, fmt.Errorf("message metadata: %w", err)
			}
			if md.NumPending == 0 || md.Sequence.Stream >= info.State.LastSeq {
				return ids, markers, owners, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, nil, nil, fmt.Errorf("read stream: %w", err)
		}
		if ctx.Err() != nil {
			return nil, nil, nil, fmt.Errorf("read stream: %w", ctx.Err())
		}
	}
}
