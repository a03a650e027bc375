// Package project applies events to the MongoDB read model: version-guarded writes of
// users, todos and per-user stats, tombstones for deletes, and the projection
// watermark.
//
// Every write is idempotent and order-insensitive, so the consumer may deliver an event
// any number of times, in any order, from any number of replicas:
//
//   - A document is written with the filter {_id, version: {$not: {$gte: v}}} and
//     upsert. When the stored document is as new or newer the filter matches nothing
//     and the upsert's insert hits the unique _id: the server answers E11000. That is
//     not always "stale": two upserts of a missing document both miss the filter, and
//     the loser of the insert gets E11000 whatever its version. So an E11000 is retried
//     once (the retry finds the winner's document and compares versions), and only a
//     second one means "stale, skip".
//   - A delete writes a tombstone {deleted: true, version} through the same guard, so a
//     late older upsert meets a newer version and is skipped instead of resurrecting.
//   - Stats are the source's own snapshot (event.Stats, versioned), written under the
//     same guard. Nothing here counts, increments or reads other documents: an event
//     costs the same few writes keyed by _id whatever the size of its owner.
//
// A batch is coalesced before it is written: one write per document, carrying the
// newest version the batch holds of it (stream order within an aggregate is therefore
// kept: only its newest state is written), and one stats write per owner, carrying the
// highest stats version the batch holds (on a tie, the deleted snapshot). Events
// without stats (written before events carried them) leave the stats alone. Every event
// reports the outcome of the write that carried its document: Applied when that write
// landed (the document now holds this event's state or a newer one of the same batch),
// Stale when the stored document was already as new. So the applied count is the
// number of events whose change became visible through this batch, and the lag of a
// superseded event is still the time until its change was visible.
//
// The write path depends on the server, detected once at start (DetectServer):
//
//   - MongoDB: one unordered BulkWrite of guarded upserts per collection and batch.
//   - FerretDB v1, the development stand-in: its BulkWrite ignores ordered=false (it
//     stops at the first error and misreports indexes) and hangs past about 50 update
//     statements, but its unordered InsertMany is its cheapest write. Documents the
//     batch shows to be new (an aggregate's "created" event of version 1, a stats
//     snapshot of version 1) are inserted with unordered InsertMany commands of at
//     most 100 documents, sent concurrently (bounded): FerretDB runs one command's
//     rows one INSERT after another on one PostgreSQL connection. A duplicate _id
//     there means the document exists after all, and that document goes through the
//     guarded upsert. Every other write is a single guarded upsert,
//     sent concurrently (bounded).
//
// On FerretDB a filtered update is read-then-write, not atomic: two writers of
// different versions of one existing document can interleave and leave the older one.
// One active consumer replica and one write per document per batch keep such writers
// apart; verify finds what slips through and resync repairs it. MongoDB's updates are
// atomic and need none of that.
//
// Tombstones are never purged in place. The rule for removing one safely: no message
// older than the delete may still reach any consumer of this read model, which takes
// every consumer's ack floor past the delete's stream sequence, no pending dead letter
// or unpublished outbox row of the aggregate, and the publisher's republish window
// passed. The stream keeps the delete as its subject's newest message, so a rebuild
// recreates the tombstones anyway. One small document per deleted aggregate is the
// price of not having to prove all of that at run time.
package project

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"golang.org/x/sync/errgroup"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
)

// Outcome is what applying one event did.
type Outcome int

// Outcomes of Apply.
const (
	Applied Outcome = iota + 1 // the document now holds this event's state, or a newer one of the same batch
	Stale                      // the stored document was as new or newer: nothing written
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Stale:
		return "stale"
	}
	return "unknown"
}

// Result is the fate of one event of a batch. Err is nil when the event's document and
// its owner's stats are written; the event may then be acknowledged.
type Result struct {
	Outcome Outcome
	Err     error
}

// Server is the kind of server the read model lives on; it picks the write path (see
// the package documentation).
type Server int

// Servers. The zero value is FerretDB: its path runs correctly on any server, only
// slower on MongoDB than MongoDB's own.
const (
	FerretDB Server = iota
	MongoDB
)

func (s Server) String() string {
	if s == MongoDB {
		return "mongodb"
	}
	return "ferretdb"
}

// DetectServer asks the server behind client what it is (the buildInfo command):
// FerretDB answers with a ferretdbVersion field, MongoDB without one.
func DetectServer(ctx context.Context, client *mongo.Client) (Server, error) {
	var info bson.Raw
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return 0, fmt.Errorf("buildInfo: %w", err)
	}
	if _, err := info.LookupErr("ferretdbVersion"); err == nil {
		return FerretDB, nil
	}
	return MongoDB, nil
}

// Projector writes events into one read-model database.
type Projector struct {
	db          *mongo.Database
	concurrency int
	server      Server
	insertFirst bool
	now         func() time.Time
}

// Option tunes a Projector.
type Option func(*Projector)

// OnServer picks the write path of server (see DetectServer); without it, FerretDB's.
func OnServer(server Server) Option { return func(p *Projector) { p.server = server } }

// InsertFirst tries every document as an insert first, on either path: for a database
// that is known to start empty, such as a rebuild's, where nearly every document is
// new. A document that exists goes through the guarded upsert.
func InsertFirst() Option { return func(p *Projector) { p.insertFirst = true } }

// New writes into db with at most concurrency writes in flight (at least 1).
func New(db *mongo.Database, concurrency int, opts ...Option) *Projector {
	p := &Projector{db: db, concurrency: max(1, concurrency), now: time.Now}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Decode parses an event and checks its payload: an event that fails here can never
// apply, however often it is delivered.
func Decode(b []byte) (event.Envelope, error) {
	e, err := event.Decode(b)
	if err != nil {
		return e, err
	}
	switch {
	case event.IsDelete(e.Type):
		_, err = e.Tombstone()
	case e.AggregateType == event.AggregateUser:
		_, err = e.User()
	default:
		_, err = e.Todo()
	}
	return e, err
}

// write is one document write of a batch, and its fate.
type write struct {
	coll    *mongo.Collection
	id      string
	version int64
	set     bson.D // the document without _id
	unset   bson.D // fields an older state may hold that this one lacks
	insert  bool   // try an insert first: the document is probably new
	events  []int  // the events of the batch that this write carries
	outcome Outcome
	err     error
}

func (w *write) done() bool { return w.outcome != 0 || w.err != nil }

// Apply writes a batch of decoded events, coalesced as the package documentation
// says: one write per document and one stats write per owner. It returns one result
// per event, in the order given: the outcome of its document's write, and the error of
// that write or of its owner's stats write, which every event it carries shares. ctx
// bounds the whole batch.
func (p *Projector) Apply(ctx context.Context, events []event.Envelope) []Result {
	docs, stats := p.plan(events)
	p.write(ctx, append(docs, stats...))

	results := make([]Result, len(events))
	for _, w := range docs {
		for _, i := range w.events {
			results[i] = Result{Outcome: w.outcome, Err: w.err}
		}
	}
	for _, w := range stats {
		if w.err == nil {
			continue
		}
		for _, i := range w.events {
			if results[i].Err == nil {
				results[i].Err = w.err
			}
		}
	}
	return results
}

// ApplyRaw decodes one message body and applies it, stats included: the redrive of a
// dead letter.
func (p *Projector) ApplyRaw(ctx context.Context, body []byte) error {
	e, err := Decode(body)
	if err != nil {
		return err
	}
	return p.Apply(ctx, []event.Envelope{e})[0].Err
}

// plan coalesces a batch into the document writes (one per aggregate, its newest
// version) and the stats writes (one per owner, the highest stats version).
func (p *Projector) plan(events []event.Envelope) (docs, stats []*write) {
	type group struct {
		newest int  // index of the newest event
		isNew  bool // the batch holds the event that created the document
		events []int
	}
	var (
		aggs, owners         = map[string]*group{}, map[string]*group{}
		aggOrder, ownerOrder []string
	)
	for i, e := range events {
		k := e.AggregateType + "/" + e.AggregateID.String()
		g := aggs[k]
		if g == nil {
			g = &group{newest: i}
			aggs[k] = g
			aggOrder = append(aggOrder, k)
		}
		g.events = append(g.events, i)
		if e.Version > events[g.newest].Version {
			g.newest = i
		}
		g.isNew = g.isNew || ((e.Type == event.UserCreated || e.Type == event.TodoCreated) && e.Version == 1)

		if e.Stats == nil {
			continue // written before events carried stats: leave them alone
		}
		o := e.OwnerID.String()
		g = owners[o]
		if g == nil {
			g = &group{newest: i}
			owners[o] = g
			ownerOrder = append(ownerOrder, o)
		}
		g.events = append(g.events, i)
		if s, best := *e.Stats, *events[g.newest].Stats; s.Version > best.Version || (s.Version == best.Version && s.Deleted && !best.Deleted) {
			g.newest = i
		}
		g.isNew = g.isNew || e.Stats.Version == 1
	}
	insertNew := func(g *group) bool { return p.insertFirst || (p.server == FerretDB && g.isNew) }
	for _, k := range aggOrder {
		g := aggs[k]
		w := p.document(events[g.newest])
		w.events, w.insert = g.events, insertNew(g)
		docs = append(docs, w)
	}
	for _, o := range ownerOrder {
		g := owners[o]
		w := p.statsDocument(o, *events[g.newest].Stats)
		w.events, w.insert = g.events, insertNew(g)
		stats = append(stats, w)
	}
	return docs, stats
}

// document is the write of e's state, or of its tombstone. A payload that does not
// decode fails the write (Decode rejects such events before they get here).
func (p *Projector) document(e event.Envelope) *write {
	w := &write{coll: p.db.Collection(readmodel.CollUsers), id: e.AggregateID.String(), version: e.Version}
	if e.AggregateType == event.AggregateTodo {
		w.coll = p.db.Collection(readmodel.CollTodos)
	}
	now := p.now().UTC()
	var doc any
	switch {
	case event.IsDelete(e.Type):
		ts, err := e.Tombstone()
		if err != nil {
			w.err = err
			return w
		}
		w.set = bson.D{
			{Key: "version", Value: e.Version},
			{Key: "deleted", Value: true},
			{Key: "deleted_at", Value: ts.DeletedAt.UTC()},
			{Key: "projected_at", Value: now},
		}
		if e.AggregateType == event.AggregateTodo {
			w.set = append(w.set, bson.E{Key: "user_id", Value: e.OwnerID.String()})
			w.unset = fields("title", "notes", "completed", "completed_at", "due", "priority", "created_at", "updated_at")
		} else {
			w.unset = fields("email", "display_name", "created_at", "updated_at")
		}
		return w
	case e.AggregateType == event.AggregateUser:
		u, err := e.User()
		if err != nil {
			w.err = err
			return w
		}
		d := userDoc(u)
		d.ProjectedAt = now
		doc = d
	default:
		t, err := e.Todo()
		if err != nil {
			w.err = err
			return w
		}
		d := todoDoc(t)
		d.ProjectedAt = now
		doc = d
	}
	w.set, w.err = withoutID(doc)
	w.unset = fields("deleted", "deleted_at")
	return w
}

// statsDocument is the write of an owner's stats snapshot. It unsets source_version,
// the guard of stats documents written before snapshots carried a version.
func (p *Projector) statsDocument(owner string, s event.Stats) *write {
	w := &write{coll: p.db.Collection(readmodel.CollStats), id: owner, version: s.Version, unset: fields("source_version")}
	w.set, w.err = withoutID(readmodel.StatsOf(owner, s, p.now().UTC()))
	return w
}

// write runs the writes of a batch: the planned inserts and the guarded upserts of the
// server's path first, then, one by one, every write those left undecided: inserts that
// met an existing document, and the writes of a bulk the server refused as a whole
// (one bad document must fail only its own events).
func (p *Projector) write(ctx context.Context, ws []*write) {
	var inserts, upserts []*write
	for _, w := range ws {
		switch {
		case w.err != nil:
		case w.insert:
			inserts = append(inserts, w)
		default:
			upserts = append(upserts, w)
		}
	}
	var tasks []func()
	for _, group := range byCollection(inserts) {
		for chunk := range slices.Chunk(group, p.insertChunk(len(group))) {
			tasks = append(tasks, func() { insertMany(ctx, chunk) })
		}
	}
	if p.server == MongoDB {
		for _, group := range byCollection(upserts) {
			tasks = append(tasks, func() { bulkUpsert(ctx, group) })
		}
	} else {
		tasks = append(tasks, singleUpserts(ctx, upserts)...)
	}
	p.run(tasks)

	var left []*write
	for _, w := range ws {
		if !w.done() {
			left = append(left, w)
		}
	}
	p.run(singleUpserts(ctx, left))
}

// ferretInsertChunk is the most documents one FerretDB insertMany carries. FerretDB
// runs a command's INSERTs of 100 rows one after another on one PostgreSQL connection,
// so a larger command only queues behind itself; chunks of this size sent
// concurrently keep up to concurrency connections busy instead.
const ferretInsertChunk = 100

// insertChunk is how many of n new documents of one collection go in one insertMany:
// all of them on MongoDB, whose unordered bulk the server spreads by itself.
func (p *Projector) insertChunk(n int) int {
	if p.server == MongoDB {
		return n
	}
	return ferretInsertChunk
}

func singleUpserts(ctx context.Context, ws []*write) []func() {
	tasks := make([]func(), len(ws))
	for i, w := range ws {
		tasks[i] = func() { w.outcome, w.err = guardedUpsert(ctx, w.coll, w.id, "version", w.version, w.update()) }
	}
	return tasks
}

// run runs tasks with at most concurrency at a time and waits for all. Tasks record
// their own outcome in their writes.
func (p *Projector) run(tasks []func()) {
	var g errgroup.Group
	g.SetLimit(p.concurrency)
	for _, task := range tasks {
		g.Go(func() error { task(); return nil })
	}
	_ = g.Wait()
}

// byCollection splits writes by collection, keeping their order.
func byCollection(ws []*write) [][]*write {
	var (
		groups [][]*write
		index  = map[string]int{}
	)
	for _, w := range ws {
		i, ok := index[w.coll.Name()]
		if !ok {
			i = len(groups)
			index[w.coll.Name()] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], w)
	}
	return groups
}

func (w *write) update() bson.D {
	u := bson.D{{Key: "$set", Value: w.set}}
	if len(w.unset) > 0 {
		u = append(u, bson.E{Key: "$unset", Value: w.unset})
	}
	return u
}

// insertMany inserts ws (one collection) unordered. An insert that meets an existing
// _id is left undecided, for the guarded upsert.
func insertMany(ctx context.Context, ws []*write) {
	docs := make([]any, len(ws))
	for i, w := range ws {
		docs[i] = append(bson.D{{Key: "_id", Value: w.id}}, w.set...)
	}
	coll := ws[0].coll
	_, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	settleBulk(ws, err, "insert into "+coll.Name(), func(w *write, we mongo.WriteError) {
		if !mongo.IsDuplicateKeyError(we) {
			w.err = fmt.Errorf("insert %s %s version %d: %w", coll.Name(), w.id, w.version, we)
		}
	})
}

// bulkUpsert runs the guarded upserts of ws (one collection) as one unordered
// BulkWrite, and those that met E11000 once more (see guardedUpsert).
func bulkUpsert(ctx context.Context, ws []*write) {
	for range 2 {
		ws = bulkOnce(ctx, ws)
	}
	for _, w := range ws {
		w.outcome = Stale
	}
}

// bulkOnce settles ws but those that met E11000, which it returns.
func bulkOnce(ctx context.Context, ws []*write) (dup []*write) {
	if len(ws) == 0 {
		return nil
	}
	models := make([]mongo.WriteModel, len(ws))
	for i, w := range ws {
		models[i] = mongo.NewUpdateOneModel().SetFilter(guardFilter(w.id, "version", w.version)).SetUpdate(w.update()).SetUpsert(true)
	}
	coll := ws[0].coll
	_, err := coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	settleBulk(ws, err, "bulk upsert into "+coll.Name(), func(w *write, we mongo.WriteError) {
		if mongo.IsDuplicateKeyError(we) {
			dup = append(dup, w)
			return
		}
		w.err = fmt.Errorf("upsert %s %s version %d: %w", coll.Name(), w.id, w.version, we)
	})
	return dup
}

// settleBulk settles the writes of one unordered bulk from its error. The writes the
// server reported a write error for go to onWriteError, which may leave them
// undecided; the others are applied. A refusal of the whole bulk leaves every write
// undecided, to be tried alone; an error without an answer from the server (network,
// timeout) fails them all.
func settleBulk(ws []*write, err error, what string, onWriteError func(*write, mongo.WriteError)) {
	var (
		bwe    mongo.BulkWriteException
		se     mongo.ServerError
		failed = make(map[int]bool)
	)
	switch {
	case err == nil:
	case errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0:
		if slices.ContainsFunc(bwe.WriteErrors, func(we mongo.BulkWriteError) bool { return we.Index < 0 || we.Index >= len(ws) }) {
			return // indexes that name no write: try each alone
		}
		for _, we := range bwe.WriteErrors {
			failed[we.Index] = true
			onWriteError(ws[we.Index], we.WriteError)
		}
	case errors.As(err, &se) && !mongo.IsNetworkError(err) && !mongo.IsTimeout(err):
		return
	default:
		for _, w := range ws {
			w.err = fmt.Errorf("%s (%d documents): %w", what, len(ws), err)
		}
		return
	}
	for i, w := range ws {
		if !failed[i] {
			w.outcome = Applied
		}
	}
}

// guardFilter selects the document id unless it holds guard >= v. $not also matches a
// document without the field: stats documents of older releases have none.
func guardFilter(id, guard string, v int64) bson.D {
	return bson.D{{Key: "_id", Value: id}, {Key: guard, Value: bson.D{{Key: "$not", Value: bson.D{{Key: "$gte", Value: v}}}}}}
}

// guardedUpsert writes update to the document id unless it already holds guard >= v.
// E11000 is retried once before it counts as stale: see the package documentation.
func guardedUpsert(ctx context.Context, coll *mongo.Collection, id string, guard string, v int64, update bson.D) (Outcome, error) {
	for range 2 {
		_, err := coll.UpdateOne(ctx, guardFilter(id, guard, v), update, options.UpdateOne().SetUpsert(true))
		switch {
		case err == nil:
			return Applied, nil
		case !mongo.IsDuplicateKeyError(err):
			return 0, fmt.Errorf("upsert %s %s %s %d: %w", coll.Name(), id, guard, v, err)
		}
	}
	return Stale, nil
}

func fields(names ...string) bson.D {
	d := make(bson.D, len(names))
	for i, f := range names {
		d[i] = bson.E{Key: f, Value: ""}
	}
	return d
}

// withoutID marshals a document for $set, dropping _id (immutable, and in the filter).
func withoutID(v any) (bson.D, error) {
	raw, err := bson.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal document: %w", err)
	}
	var d bson.D
	if err := bson.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("unmarshal document: %w", err)
	}
	out := d[:0]
	for _, e := range d {
		if e.Key != "_id" {
			out = append(out, e)
		}
	}
	return out, nil
}

// userDoc is the read-model document of a user's state.
func userDoc(u event.UserData) readmodel.User {
	return readmodel.User{
		ID:          u.ID.String(),
		Email:       u.Email,
		DisplayName: u.DisplayName,
		Version:     u.Version,
		CreatedAt:   u.CreatedAt.UTC(),
		UpdatedAt:   u.UpdatedAt.UTC(),
	}
}

// todoDoc is the read-model document of a todo's state.
func todoDoc(t event.TodoData) readmodel.Todo {
	return readmodel.Todo{
		ID:          t.ID.String(),
		UserID:      t.UserID.String(),
		Title:       t.Title,
		Notes:       t.Notes,
		Completed:   t.Completed,
		CompletedAt: utc(t.CompletedAt),
		Due:         utc(t.Due),
		Priority:    t.Priority,
		Version:     t.Version,
		CreatedAt:   t.CreatedAt.UTC(),
		UpdatedAt:   t.UpdatedAt.UTC(),
	}
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// AdvanceWatermark records that the event at seq, committed at occurredAt, is applied.
// The watermark only moves forward (same guard as the documents).
func (p *Projector) AdvanceWatermark(ctx context.Context, seq uint64, occurredAt time.Time) error {
	update := bson.D{{Key: "$set", Value: bson.D{
		{Key: "stream_seq", Value: int64(seq)},
		{Key: "applied_at", Value: p.now().UTC()},
		{Key: "occurred_at", Value: occurredAt.UTC()},
	}}}
	if _, err := guardedUpsert(ctx, p.db.Collection(readmodel.CollProjection), readmodel.WatermarkID, "stream_seq", int64(seq), update); err != nil {
		return fmt.Errorf("advance the watermark to %d: %w", seq, err)
	}
	return nil
}
