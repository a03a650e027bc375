// Package ferret runs an embedded FerretDB (the MongoDB wire protocol over its
// PostgreSQL backend) so that tests and the local stack have a MongoDB stand-in without
// a MongoDB server. Services never import it: they only see a MONGODB_URI.
//
// FerretDB is embedded rather than installed because its released module lacks the
// version file its own main package checks at start; the embedded package does not
// check it (see the brief, "The MongoDB stand-in, measured").
package ferret

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/outboxtodo/outboxtodo/shared/postgres"
	"github.com/outboxtodo/outboxtodo/shared/readmodel/ferretindex"
)

// Config says where FerretDB listens and which PostgreSQL database stores its data.
type Config struct {
	// Addr is the TCP listen address; "127.0.0.1:0" picks a free port.
	Addr string
	// PostgreSQLURL names a database FerretDB owns: every MongoDB database becomes a
	// schema in it, so do not share it with the services' own tables.
	PostgreSQLURL string
	// Logger receives FerretDB's own logs; nil discards them.
	Logger *slog.Logger
	// SynchronousCommitOff makes synchronous_commit = off the database's default: a
	// commit returns before its WAL reaches the disk, which about doubles FerretDB's
	// writes per connection, but a crash of the PostgreSQL server loses the last
	// writes FerretDB acknowledged. For the local stack and tests only: never for data
	// anyone keeps, nor for a stack that crashes PostgreSQL to check nothing is lost.
	SynchronousCommitOff bool
}

// Server is one running FerretDB. Stop and Start may be called again to simulate an
// outage of the MongoDB server: a restarted server listens on the same address.
type Server struct {
	cfg Config

	mu     sync.Mutex
	addr   string // the bound address, fixed after the first start
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs FerretDB until ctx is cancelled or Stop is called. It returns once the
// listener accepts connections, or with an error after 30 seconds.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		return nil, errors.New("ferret: empty listen address")
	}
	if cfg.PostgreSQLURL == "" {
		return nil, errors.New("ferret: empty PostgreSQL URL")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := setDefaults(ctx, cfg); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, addr: cfg.Addr}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// setDefaults sets the database's session defaults before FerretDB opens its first
// connection, which keeps the defaults it found: custom plans always, so that the read
// model's GIN indexes serve its queries from the start (see package ferretindex), and
// synchronous_commit when asked.
func setDefaults(ctx context.Context, cfg Config) error {
	settings := []ferretindex.Setting{ferretindex.CustomPlans}
	if cfg.SynchronousCommitOff {
		settings = append(settings, ferretindex.Setting{Name: "synchronous_commit", Value: "off"})
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pool, err := postgres.Connect(ctx, cfg.PostgreSQLURL, postgres.PoolConfig{MaxConns: 1, AppName: "ferret"})
	if err != nil {
		return fmt.Errorf("ferret: %w", err)
	}
	defer pool.Close()
	if err := ferretindex.SetDatabaseDefaults(ctx, pool, settings...); err != nil {
		return fmt.Errorf("ferret: %w", err)
	}
	return nil
}

// newMu serializes ferretdb.New, which writes a package-level variable of FerretDB's
// (its version info): two servers starting at once in one process race on it.
var newMu sync.Mutex

// Start starts a stopped server again on its previous address.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errors.New("ferret: already running")
	}
	newMu.Lock()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: s.addr},
		Logger:        s.cfg.Logger,
		Handler:       "postgresql",
		PostgreSQLURL: s.cfg.PostgreSQLURL,
	})
	newMu.Unlock()
	if err != nil {
		return fmt.Errorf("ferret: new on %s: %w", s.addr, err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(runCtx) // always nil: it stops when runCtx is cancelled
	}()
	// MongoDBURI waits for the listener, which Run sets up; it reports the bound port
	// when the address asked for port 0.
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		cancel()
		<-done
		return fmt.Errorf("ferret: parse its uri: %w", err)
	}
	s.addr = u.Host
	if err := waitDial(ctx, s.addr, 30*time.Second); err != nil {
		cancel()
		<-done
		return err
	}
	s.cancel, s.done = cancel, done
	// Stop with the caller's context too, so a forgotten Stop cannot leak the server.
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Stop()
		case <-done:
		}
	}()
	return nil
}

// Stop closes the listener and every connection and waits for FerretDB to finish.
// Stopping a stopped server does nothing.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return nil
	}
	s.cancel()
	<-s.done
	s.cancel, s.done = nil, nil
	return nil
}

// Addr is the address the server listens on (host:port).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// PostgreSQLURL is the backend database of the server: for tests that take it away
// underneath a running FerretDB, and for the GIN indexes FerretDB's queries need
// (package readmodel/ferretindex of module shared).
func (s *Server) PostgreSQLURL() string { return s.cfg.PostgreSQLURL }

// URI is the MongoDB connection string for the server. Direct connection: FerretDB is
// a single server, not a replica set.
func (s *Server) URI() string {
	return "mongodb://" + s.Addr() + "/?directConnection=true"
}

func waitDial(ctx context.Context, addr string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ferret: %s does not accept connections: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
