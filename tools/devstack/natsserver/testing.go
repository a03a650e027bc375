package natsserver

import (
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NewTest starts a server with a store in a temporary directory of t, fails t if it
// cannot, and shuts it down when t ends. The server logs to log when it is non-nil.
func NewTest(t testing.TB, log *slog.Logger) *Server {
	t.Helper()
	s, err := Start(Config{StoreDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// NewTestCluster starts a three-node cluster like NewTest does a server.
func NewTestCluster(t testing.TB, log *slog.Logger) *Cluster {
	t.Helper()
	c, err := StartCluster(ClusterConfig{StoreDir: t.TempDir(), Log: log})
	if err != nil {
		t.Fatalf("start nats cluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// Connect connects a client of the test to url, closed when the test ends, and returns
// it with its JetStream context.
func Connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}
