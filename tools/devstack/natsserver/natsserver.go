// Package natsserver runs real NATS JetStream servers in-process, from the
// github.com/nats-io/nats-server/v2 module, for tests and for the local stack.
//
// A Server listens on a loopback port (a free one unless Config.Port is set) and keeps
// its JetStream data in Config.StoreDir, so it can be stopped and started again on the
// same port with the same streams: clients configured to reconnect find it again. A
// Cluster is three (or more) such servers routed to each other on loopback, with a
// JetStream meta group, so streams can be replicated.
//
//	srv, err := natsserver.Start(natsserver.Config{StoreDir: dir})
//	...
//	defer srv.Shutdown()
//	nc, err := nats.Connect(srv.ClientURL())
//
// Tests use NewTest and NewTestCluster, which fail the test on error and shut the
// servers down when it ends. Production never imports this package.
package natsserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultHost is the interface servers listen on when Config.Host is empty.
const DefaultHost = "127.0.0.1"

// readyTimeout bounds the wait for a started server to accept clients.
const readyTimeout = 10 * time.Second

// Config describes one server.
type Config struct {
	// StoreDir holds the JetStream data (required). Keep it to restart with the data.
	StoreDir string
	// Host defaults to DefaultHost.
	Host string
	// Port is the client port; 0 picks a free one, kept across restarts.
	Port int
	// Name is the server name (required in a cluster, where it must be unique);
	// empty lets the server generate one.
	Name string
	// Log receives the server's notices, warnings and errors; nil discards them.
	Log *slog.Logger

	// Users and NkeyUsers, when any is set, make the server require authentication:
	// a user name and password, or a signature by the private key of one of the
	// public user nkeys (U...). All of them share the global account, JetStream
	// included.
	Users     []User
	NkeyUsers []string
	// TLS, when set, makes the server require TLS with this configuration (its
	// certificate; ClientCAs and ClientAuth to verify client certificates).
	TLS *tls.Config

	// Set by Cluster.
	cluster     string
	clusterPort int
	routes      []*url.URL
}

// User is a user name and password the server accepts.
type User struct {
	Name     string
	Password string
}

// Server is one running (or stopped) server. Its methods are safe for concurrent use.
type Server struct {
	cfg Config

	mu  sync.Mutex
	srv *server.Server // nil while stopped
}

// Start starts a server and waits until it accepts clients.
func Start(cfg Config) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsserver: StoreDir is required")
	}
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.Port == 0 {
		p, err := freePort(cfg.Host)
		if err != nil {
			return nil, err
		}
		cfg.Port = p
	}
	s := &Server{cfg: cfg}
	if err := s.Restart(); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart starts a stopped server again on the same port with the same store; it does
// nothing when the server runs.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return nil
	}
	opts := &server.Options{
		ServerName: s.cfg.Name,
		Host:       s.cfg.Host,
		Port:       s.cfg.Port,
		JetStream:  true,
		StoreDir:   s.cfg.StoreDir,
		NoSigs:     true,
		NoLog:      s.cfg.Log == nil,
		// Explicit limits: the defaults size themselves from the machine's memory and
		// disk, which several test servers at once would overcommit.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  4 << 30,
	}
	for _, u := range s.cfg.Users {
		opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: u.Password})
	}
	for _, k := range s.cfg.NkeyUsers {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	if s.cfg.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = s.cfg.TLS
		opts.TLSVerify = s.cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 2
	}
	if s.cfg.cluster != "" {
		opts.Cluster = server.ClusterOpts{Name: s.cfg.cluster, Host: s.cfg.Host, Port: s.cfg.clusterPort}
		opts.Routes = s.cfg.routes
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("natsserver: new server: %w", err)
	}
	if s.cfg.Log != nil {
		srv.SetLoggerV2(slogAdapter{s.cfg.Log.With("nats_server", s.cfg.Name)}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("natsserver: server on %s:%d not ready after %s", s.cfg.Host, s.cfg.Port, readyTimeout)
	}
	s.srv = srv
	return nil
}

// Stop shuts the server down and waits until it has; the port and store stay reserved
// for Restart. Clients see a disconnection.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Shutdown is Stop; it reads better where the server is not started again.
func (s *Server) Shutdown() { s.Stop() }

// Running reports whether the server is started.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil && s.srv.Running()
}

// ClientURL is the nats:// URL of the server; it stays the same across restarts.
func (s *Server) ClientURL() string {
	return fmt.Sprintf("nats://%s", net.JoinHostPort(s.cfg.Host, fmt.Sprint(s.cfg.Port)))
}

// Name is the server name given in Config (or by the Cluster).
func (s *Server) Name() string { return s.cfg.Name }

// Cluster is a set of servers routed to each other with one JetStream meta group.
type Cluster struct {
	// Servers are the nodes, in a stable order; stop and restart them one by one to
	// simulate a node failure.
	Servers []*Server
}

// ClusterConfig describes a cluster.
type ClusterConfig struct {
	// Name is the cluster name; default "devstack".
	Name string
	// Size is the number of nodes; default 3 (the smallest with a quorum that survives
	// the loss of a node).
	Size int
	// StoreDir is the parent of each node's store directory (required).
	StoreDir string
	// Log receives the servers' notices; nil discards them.
	Log *slog.Logger
}

// StartCluster starts every node and waits until the JetStream meta group has a leader
// (or fails after a timeout). On error it stops what it started.
func StartCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsserver: StoreDir is required")
	}
	if cfg.Name == "" {
		cfg.Name = "devstack"
	}
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	clientPorts := make([]int, cfg.Size)
	clusterPorts := make([]int, cfg.Size)
	routes := make([]*url.URL, cfg.Size)
	for i := range cfg.Size {
		var err error
		if clientPorts[i], err = freePort(DefaultHost); err != nil {
			return nil, err
		}
		if clusterPorts[i], err = freePort(DefaultHost); err != nil {
			return nil, err
		}
		routes[i] = &url.URL{Scheme: "nats", Host: net.JoinHostPort(DefaultHost, fmt.Sprint(clusterPorts[i]))}
	}
	c := &Cluster{}
	for i := range cfg.Size {
		nodeCfg := Config{
			StoreDir:    fmt.Sprintf("%s/n%d", strings.TrimRight(cfg.StoreDir, "/"), i+1),
			Host:        DefaultHost,
			Port:        clientPorts[i],
			Name:        fmt.Sprintf("%s-n%d", cfg.Name, i+1),
			Log:         cfg.Log,
			cluster:     cfg.Name,
			clusterPort: clusterPorts[i],
			routes:      routes,
		}
		s := &Server{cfg: nodeCfg}
		if err := s.Restart(); err != nil {
			c.Shutdown()
			return nil, err
		}
		c.Servers = append(c.Servers, s)
	}
	if err := c.WaitForMetaLeader(30 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// ClientURL lists every node's URL, comma-separated, as nats.Connect accepts it.
func (c *Cluster) ClientURL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// WaitForMetaLeader waits until a running node leads the JetStream meta group and every
// running node is current with it: only then can streams be created.
func (c *Cluster) WaitForMetaLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		// A leader alone is not enough: until it has heard from every running peer, a
		// replicated stream fails with "no suitable peers for placement".
		leader, current, running, peers := false, true, 0, 0
		for _, s := range c.Servers {
			s.mu.Lock()
			if s.srv != nil {
				running++
				if s.srv.JetStreamIsLeader() {
					leader, peers = true, len(s.srv.JetStreamClusterPeers())
				}
				current = current && s.srv.JetStreamIsCurrent()
			}
			s.mu.Unlock()
		}
		if leader && current && peers == running {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsserver: no JetStream meta leader after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

// freePort asks the kernel for a free TCP port on host. Another process could take it
// before the server binds it; on loopback in tests that is rare enough.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("natsserver: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// slogAdapter routes the server's log lines to slog; debug and trace are off.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.log.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.log.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.log.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.log.Debug(fmt.Sprintf(format, v...)) }
