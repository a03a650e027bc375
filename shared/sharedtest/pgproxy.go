package sharedtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// CommitFault is what a PGProxy does to the next commit it sees: a COMMIT, or the Sync
// that ends a pipeline of statements run as one implicit transaction.
type CommitFault int

// Faults a PGProxy can inject at COMMIT.
const (
	// CommitPasses relays COMMIT and its answer: no fault.
	CommitPasses CommitFault = iota
	// CommitLost closes the connection instead of relaying COMMIT: the server never
	// receives it, so the transaction aborts.
	CommitLost
	// AnswerLost relays COMMIT, waits for the server's answer (so the commit has
	// landed), then closes the client's connection without relaying it.
	AnswerLost
)

// PGProxy is a TCP proxy in front of a PostgreSQL server that can break a connection
// exactly at a commit, so tests can produce a commit whose outcome the client cannot
// know. It reads the frontend protocol (simple and extended query messages) to spot a
// COMMIT, or a Sync that commits an implicit transaction: one after two or more
// Execute messages, sent outside a transaction block (the server's last ReadyForQuery
// said idle). Everything else passes through untouched.
type PGProxy struct {
	t        testing.TB
	target   string
	ln       net.Listener
	mu       sync.Mutex
	fault    CommitFault
	refusing bool
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// newPGProxy listens on a free loopback port and relays to target (host:port). It is
// closed when the test ends.
func newPGProxy(t testing.TB, target string) *PGProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &PGProxy{t: t, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// ProxyDatabase puts a PGProxy in front of the server of the PostgreSQL URL dbURL and
// returns the URL that connects through it, and the proxy.
func ProxyDatabase(t testing.TB, dbURL string) (string, *PGProxy) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("proxy: parse database url: %v", err)
	}
	p := newPGProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	return u.String(), p
}

// FailNextCommit makes the next commit through the proxy (on any connection) fail as f
// says; later ones pass.
func (p *PGProxy) FailNextCommit(f CommitFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = f
}

// FaultPending reports whether the fault FailNextCommit set still waits for a commit:
// a test whose write should have committed through the proxy checks it went off.
func (p *PGProxy) FaultPending() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault != CommitPasses
}

// Refuse makes the proxy close new connections at once (the server looks down) while
// on is true.
func (p *PGProxy) Refuse(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refusing = on
}

func (p *PGProxy) takeFault() CommitFault {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fault
	p.fault = CommitPasses
	return f
}

func (p *PGProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refusing := p.refusing
		if !refusing {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if refusing {
			_ = c.Close()
			continue
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *PGProxy) serve(client net.Conn) {
	defer p.forget(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		p.t.Logf("proxy dial %s: %v", p.target, err)
		return
	}
	defer server.Close()
	p.mu.Lock()
	p.conns[server] = struct{}{}
	p.mu.Unlock()
	defer p.forget(server)

	// answers carries the fault in force for the server's next answer: the reader of
	// the client's side tells the writer to the client's side to swallow the answer
	// to a COMMIT and hang up.
	swallow := make(chan struct{}, 1)
	var inBlock atomic.Bool // the server's last ReadyForQuery said in a transaction block
	var wg sync.WaitGroup
	wg.Go(func() {
		defer server.Close()
		defer client.Close()
		p.relayServer(server, client, swallow, &inBlock)
	})
	p.relayClient(client, server, swallow, &inBlock)
	_ = client.Close()
	_ = server.Close()
	wg.Wait()
}

// relayClient copies frontend messages to the server, acting on a commit.
func (p *PGProxy) relayClient(client, server net.Conn, swallow chan<- struct{}, inBlock *atomic.Bool) {
	// Startup (and an SSLRequest before it) have no type byte.
	for {
		msg, err := readUntyped(client)
		if err != nil {
			return
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
		const sslRequest, gssRequest = 80877103, 80877104
		code := binary.BigEndian.Uint32(msg[4:8])
		if code != sslRequest && code != gssRequest {
			break
		}
	}
	executes := 0 // since the last Sync
	for {
		msg, err := readTyped(client)
		if err != nil {
			return
		}
		implicitCommit := false
		switch msg[0] {
		case 'E':
			executes++
		case 'S':
			implicitCommit = executes >= 2 && !inBlock.Load()
			executes = 0
		}
		if isCommit(msg) || implicitCommit {
			switch p.takeFault() {
			case CommitLost:
				return
			case AnswerLost:
				swallow <- struct{}{}
			}
		}
		if _, err := server.Write(msg); err != nil {
			return
		}
	}
}

// relayServer copies backend messages to the client until told to swallow the answer
// to a commit: then it reads that answer up to ReadyForQuery and returns, so the
// connection closes with the commit landed but unanswered.
func (p *PGProxy) relayServer(server, client net.Conn, swallow <-chan struct{}, inBlock *atomic.Bool) {
	swallowing := false
	for {
		msg, err := readTyped(server)
		if err != nil {
			return
		}
		select {
		case <-swallow:
			swallowing = true
		default:
		}
		if swallowing {
			if msg[0] == 'Z' { // ReadyForQuery: the commit is done
				return
			}
			continue
		}
		if msg[0] == 'Z' && len(msg) > 5 { // its status: 'I' idle, 'T' or 'E' in a block
			inBlock.Store(msg[5] != 'I')
		}
		if _, err := client.Write(msg); err != nil {
			return
		}
	}
}

func (p *PGProxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *PGProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func readUntyped(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 8 || n > 1<<20 {
		return nil, fmt.Errorf("startup message length %d", n)
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

func readTyped(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < 4 || n > 1<<30 {
		return nil, errors.New("message length out of range")
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[5:])
	return msg, err
}

// isCommit spots COMMIT sent as a simple query ('Q') or parsed for the extended
// protocol ('P': name, then the query text).
func isCommit(msg []byte) bool {
	body := msg[5:]
	switch msg[0] {
	case 'Q':
	case 'P':
		i := bytes.IndexByte(body, 0)
		if i < 0 {
			return false
		}
		body = body[i+1:]
	default:
		return false
	}
	q := bytes.TrimSpace(bytes.TrimRight(body, "\x00"))
	if i := bytes.IndexByte(q, 0); i >= 0 {
		q = q[:i]
	}
	return bytes.EqualFold(bytes.TrimRight(q, "; "), []byte("commit"))
}
