package app_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/outboxtodo/outboxtodo/services/projector/internal/projtest"
	"github.com/outboxtodo/outboxtodo/shared/readmodel"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// The projector writes the read model with the configured write concern, by default
// majority and journaled, and FerretDB accepts it: every write command the run command
// sends carries {w: "majority", j: true}, as seen on the wire, and the writes land.
func TestRunWritesWithMajorityJournaled(t *testing.T) {
	env := projtest.New(t)
	wire := recordClientBytes(t, env.Ferret.Addr())
	env.Setenv(t)
	t.Setenv("MONGODB_URI", "mongodb://"+wire.addr+"/?directConnection=true")
	setAdminAddr(t)

	ctx := sharedtest.Context(t, 2*time.Minute)
	w := projtest.NewWorld(t)
	u := w.CreateUser()
	a, b := w.CreateTodo(u, "a"), w.CreateTodo(u, "b")
	w.SetCompleted(a, true)
	w.DeleteTodo(b)
	env.Publish(t, w.Events...)
	startRun(t, ctx, env)

	todos := env.Mongo.Database(env.Control).Collection(readmodel.CollTodos)
	sharedtest.Eventually(t, 60*time.Second, func() (bool, string) {
		var ta, tb readmodel.Todo
		errA := todos.FindOne(ctx, bson.D{{Key: "_id", Value: a.String()}}).Decode(&ta)
		errB := todos.FindOne(ctx, bson.D{{Key: "_id", Value: b.String()}}).Decode(&tb)
		return errA == nil && errB == nil && ta.Version == 2 && tb.Deleted, "todo a not at version 2 or b not deleted yet"
	})

	writes := 0
	for _, cmd := range wire.commands(t) {
		first, err := cmd.IndexErr(0)
		if err != nil {
			continue
		}
		name := first.Key()
		switch name {
		case "insert", "update", "delete", "findAndModify":
		default:
			continue
		}
		writes++
		wc, err := cmd.LookupErr("writeConcern")
		if err != nil {
			t.Errorf("%s command without a write concern: %s", name, cmd)
			continue
		}
		w, okW := wc.Document().Lookup("w").StringValueOK()
		j, okJ := wc.Document().Lookup("j").BooleanOK()
		if !okW || w != "majority" || !okJ || !j {
			t.Errorf("%s command's write concern = %s, want {w: majority, j: true}", name, wc)
		}
	}
	if writes == 0 {
		t.Fatal("no write command seen on the wire")
	}
}

// wireRecorder is a TCP proxy to a MongoDB-protocol server that keeps every byte each
// client connection sent, in a LogBuffer per connection (its copier writes while the
// test reads).
type wireRecorder struct {
	addr    string
	mu      sync.Mutex
	streams []*sharedtest.LogBuffer
}

// recordClientBytes starts a wireRecorder in front of target until the end of the test.
func recordClientBytes(t *testing.T, target string) *wireRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &wireRecorder{addr: ln.Addr().String()}
	var (
		wg     sync.WaitGroup
		connMu sync.Mutex
		conns  []net.Conn
		closed bool
	)
	// track keeps a pair's connections for the cleanup to close; false once it has.
	track := func(pair ...net.Conn) bool {
		connMu.Lock()
		defer connMu.Unlock()
		if closed {
			return false
		}
		conns = append(conns, pair...)
		return true
	}
	t.Cleanup(func() {
		_ = ln.Close()
		connMu.Lock()
		closed = true
		for _, c := range conns {
			_ = c.Close()
		}
		connMu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				_ = client.Close()
				continue
			}
			if !track(client, server) {
				_, _ = client.Close(), server.Close()
				return
			}
			buf := &sharedtest.LogBuffer{}
			r.mu.Lock()
			r.streams = append(r.streams, buf)
			r.mu.Unlock()
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(server, io.TeeReader(client, buf))
				_ = server.Close()
			}()
			go func() {
				defer wg.Done()
				_, _ = io.Copy(client, server)
				_ = client.Close()
			}()
		}
	}()
	return r
}

// opMsg is the wire protocol's OP_MSG opcode.
const opMsg = 2013

// commands returns the command document (the body section) of every OP_MSG the
// clients sent so far.
func (r *wireRecorder) commands(t *testing.T) []bson.Raw {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bson.Raw
	for _, s := range r.streams {
		stream := []byte(s.String())
		for len(stream) >= 16 {
			n := int(binary.LittleEndian.Uint32(stream))
			if n < 16 || n > len(stream) {
				break // the last message is still arriving
			}
			msg := stream[:n]
			stream = stream[n:]
			if binary.LittleEndian.Uint32(msg[12:]) != opMsg || n < 21 {
				continue
			}
			// Header (16 bytes), flag bits (4), then sections: a kind byte and a
			// length-prefixed payload each; kind 0 is the command document.
			for sec := msg[20:]; len(sec) >= 5; {
				kind, size := sec[0], int(binary.LittleEndian.Uint32(sec[1:]))
				if size < 4 || 1+size > len(sec) {
					t.Fatalf("malformed OP_MSG section (kind %d, size %d)", kind, size)
				}
				if kind == 0 {
					doc := bson.Raw(bytes.Clone(sec[1 : 1+size]))
					if err := doc.Validate(); err != nil {
						t.Fatalf("OP_MSG body: %v", err)
					}
					out = append(out, doc)
				}
				sec = sec[1+size:]
			}
		}
	}
	return out
}
