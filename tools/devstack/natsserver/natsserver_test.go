package natsserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// reconnect keeps a client reconnecting at once: the tests restart servers under it.
var reconnect = []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}

// publish retries until the deadline: after a restart the client needs a moment to
// reconnect and the stream a moment to recover.
func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, subj string) {
	t.Helper()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, subj, []byte("x"))
		cancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
}

func streamMsgs(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			info, err := s.Info(ctx)
			if err == nil {
				return info.State.Msgs
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream info: %v", err)
		}
	}
}

func TestServerRestartKeepsPortAndData(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 30*time.Second)
	srv := natsserver.NewTest(t, nil)
	url := srv.ClientURL()
	_, js := natsserver.Connect(t, url, reconnect...)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	publish(ctx, t, js, "s.1")

	srv.Stop()
	if srv.Running() {
		t.Fatal("running after Stop")
	}
	if err := srv.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if srv.ClientURL() != url {
		t.Fatalf("url changed across restart: %s then %s", url, srv.ClientURL())
	}
	publish(ctx, t, js, "s.2") // the same client reconnected
	if n := streamMsgs(ctx, t, js, "S"); n != 2 {
		t.Fatalf("stream holds %d messages after restart, want 2", n)
	}
}

func TestClusterSurvivesANodeRestart(t *testing.T) {
	t.Parallel()
	ctx := sharedtest.Context(t, 60*time.Second)
	c := natsserver.NewTestCluster(t, nil)
	if len(c.Servers) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Servers))
	}
	_, js := natsserver.Connect(t, c.ClientURL(), reconnect...)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r.>"}, Storage: jetstream.FileStorage, Replicas: 3}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	publish(ctx, t, js, "r.1")
	c.Servers[0].Stop()
	publish(ctx, t, js, "r.2")
	if err := c.Servers[0].Restart(); err != nil {
		t.Fatalf("restart node: %v", err)
	}
	if err := c.WaitForMetaLeader(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	publish(ctx, t, js, "r.3")
	if n := streamMsgs(ctx, t, js, "R3"); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}
