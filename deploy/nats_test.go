package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestOperatorPermissions runs a NATS server whose operator user has the permissions of
// nats/operator-permissions.conf, over a stream and bucket shaped like production's,
// and checks that the operator reads everything the read-only recipes need and changes
// nothing.
func TestOperatorPermissions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tmpl, err := os.ReadFile(filepath.Join("nats", "operator-permissions.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "operator-permissions.conf"), tmpl, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`
include ./operator-permissions.conf
listen: 127.0.0.1:-1
jetstream { store_dir: %q }
authorization {
  users = [
    {user: svc, password: svc}
    {user: operator, password: op, permissions: $OUTBOXTODO_OPERATOR}
  ]
}
`, filepath.Join(dir, "js"))), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("the template does not load: %v", err)
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("server not ready")
	}

	ctx := sharedtest.Context(t, time.Minute) // bounds a hang

	// The services' side: the stream as the publisher makes it, an event, a partition's
	// durable and the membership bucket as the projector makes them.
	_, sjs := natsserver.Connect(t, srv.ClientURL(), nats.UserInfo("svc", "svc"))
	const prefix = "todo.events"
	stream, err := sjs.CreateStream(ctx, jetstream.StreamConfig{
		Name: "TODO_EVENTS", Subjects: []string{event.StreamSubjects(prefix)},
		SubjectTransform: event.PartitionTransform(prefix, 16), MaxMsgsPerSubject: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	subject := prefix + ".user.u1.u1"
	if _, err := sjs.Publish(ctx, subject, []byte(`{"type":"user.created"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "projector-p0", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	bucket, err := sjs.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "projector-members"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bucket.Put(ctx, "c.p0", []byte("projector-a")); err != nil {
		t.Fatal(err)
	}

	// The operator's side. A refused publish is answered by the server with an
	// asynchronous -ERR, which the handler passes on.
	violations := make(chan string, 16)
	op, ojs := natsserver.Connect(t, srv.ClientURL(), nats.UserInfo("operator", "op"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				violations <- err.Error()
			}
		}))

	t.Run("reads", func(t *testing.T) {
		s, err := ojs.Stream(ctx, "TODO_EVENTS")
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		msg, err := s.GetMsg(ctx, 1)
		if err != nil || msg.Sequence != 1 {
			t.Errorf("get message 1: %v", err)
		}
		if _, err := s.Consumer(ctx, "projector-p0"); err != nil {
			t.Errorf("consumer info: %v", err)
		}
		names := s.ConsumerNames(ctx)
		var n int
		for range names.Name() {
			n++
		}
		if names.Err() != nil || n != 1 {
			t.Errorf("consumer names: %d, %v", n, names.Err())
		}
		kv, err := ojs.KeyValue(ctx, "projector-members")
		if err != nil {
			t.Fatalf("bucket: %v", err)
		}
		if e, err := kv.Get(ctx, "c.p0"); err != nil || string(e.Value()) != "projector-a" {
			t.Errorf("get c.p0: %v", err)
		}
	})

	t.Run("watches", func(t *testing.T) {
		sub, err := op.SubscribeSync(prefix + ".>")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := op.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := sjs.Publish(ctx, prefix+".todo.u1.t1", []byte(`{"type":"todo.created"}`)); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil || m.Subject != prefix+".todo.u1.t1" {
			t.Fatalf("the operator does not see published events: %v", err)
		}
	})

	t.Run("changes nothing", func(t *testing.T) {
		for _, subj := range []string{
			prefix + ".user.u1.u1",
			"3." + prefix + ".user.u1.u1",
			"$JS.API.STREAM.PURGE.TODO_EVENTS",
			"$JS.API.STREAM.DELETE.TODO_EVENTS",
			"$JS.API.STREAM.UPDATE.TODO_EVENTS",
			"$JS.API.STREAM.MSG.DELETE.TODO_EVENTS",
			"$JS.API.CONSUMER.CREATE.TODO_EVENTS",
			"$JS.API.CONSUMER.DURABLE.CREATE.TODO_EVENTS.mine",
			"$JS.API.CONSUMER.DELETE.TODO_EVENTS.projector-p0",
			"$JS.API.STREAM.PURGE.KV_projector-members",
			"$KV.projector-members.c.p0",
		} {
			if err := op.Publish(subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			select {
			case v := <-violations:
				if !strings.Contains(v, subj) {
					t.Errorf("publish to %s: the refusal names another subject: %s", subj, v)
				}
			case <-ctx.Done():
				t.Fatalf("publish to %s was not refused", subj)
			}
		}
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 2 || info.State.Consumers != 1 {
			t.Errorf("stream holds %d messages and %d consumers, want the services' 2 and 1", info.State.Msgs, info.State.Consumers)
		}
		if e, err := bucket.Get(ctx, "c.p0"); err != nil || string(e.Value()) != "projector-a" {
			t.Errorf("the bucket changed: %v", err)
		}
	})
}
