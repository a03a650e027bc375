package natsserver

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// NewTest starts a server with a store in a temporary directory of t, fails t if it
// cannot, and shuts it down when t ends. The server logs to log when it is non-nil.
func NewTest(t testing.TB, log *slog.Logger) *Server {
	t.Helper()
	return StartTest(t, Config{Log: log})
}

// StartTest starts a server of cfg like NewTest does; cfg.StoreDir is replaced by a
// temporary directory of t.
func StartTest(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.StoreDir = t.TempDir()
	s, err := Start(cfg)
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

// NkeyUser is a new NATS user's nkey: its public key, which a server's Config.NkeyUsers
// lists, and its seed, the secret, written to SeedFile as a client reads it.
type NkeyUser struct {
	Public, Seed, SeedFile string
}

// NewNkeyUser makes an nkey user with its seed file in a temporary directory of t.
func NewNkeyUser(t testing.TB) NkeyUser {
	t.Helper()
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatalf("nkey user: %v", err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatalf("nkey user: %v", err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatalf("nkey user: %v", err)
	}
	u := NkeyUser{Public: pub, Seed: string(seed), SeedFile: filepath.Join(t.TempDir(), "user.nk")}
	if err := os.WriteFile(u.SeedFile, seed, 0o600); err != nil {
		t.Fatalf("nkey user: %v", err)
	}
	return u
}
