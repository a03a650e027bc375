// Package driver drives the real API over HTTP: it signs users up, then runs a mix of
// creates, updates that complete a todo, and deletes, either closed-loop (C clients,
// each sending its next request when the previous one answered) or open-loop (a fixed
// rate of requests spread over a pool of clients). Every request's latency is recorded
// per route; sampled writes are handed to a Watcher that times their arrival in MongoDB.
package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/outboxtodo/outboxtodo/tools/loadgen/internal/stats"
)

// Routes as they appear in the report.
const (
	RouteCreate   = "POST /v1/todos"
	RouteComplete = "PATCH /v1/todos/{id}"
	RouteDelete   = "DELETE /v1/todos/{id}"
)

// Mix is the share of each kind of write, in percent; the rest of 100 are creates.
// An update or delete needs a todo of the client's own; without one it creates.
type Mix struct {
	CompletePct int
	DeletePct   int
}

// Op is one kind of write.
type Op int

// The kinds of write.
const (
	OpCreate Op = iota
	OpComplete
	OpDelete
)

// Pick chooses an operation for a roll in [0, 100), given whether the client has an
// open todo to complete and any todo to delete.
func (m Mix) Pick(roll int, haveOpen, haveAny bool) Op {
	switch {
	case roll < m.CompletePct && haveOpen:
		return OpComplete
	case roll >= m.CompletePct && roll < m.CompletePct+m.DeletePct && haveAny:
		return OpDelete
	}
	return OpCreate
}

// Driver sends requests to one API.
type Driver struct {
	base    string
	http    *http.Client
	rec     *stats.Recorder
	watch   *Watcher // nil: nothing sampled
	mix     Mix
	timeout time.Duration
}

// New returns a driver of the API at base (http://host:port) that records into rec
// and, when watch is not nil, hands it sampled writes.
func New(base string, rec *stats.Recorder, watch *Watcher, mix Mix, timeout time.Duration) *Driver {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
	return &Driver{base: base, http: &http.Client{Transport: tr, Timeout: timeout}, rec: rec, watch: watch, mix: mix, timeout: timeout}
}

// Close releases idle connections.
func (d *Driver) Close() { d.http.CloseIdleConnections() }

type todo struct {
	id        string
	version   int64
	completed bool
}

// Client is one simulated user: its id, its token and its live todos. Not safe for
// concurrent use: each goroutine drives its own clients.
type Client struct {
	ID    string
	token string
	todos []todo
	rng   *rand.Rand
}

// SignUp creates a user and returns its client.
func (d *Driver) SignUp(ctx context.Context, n int) (*Client, error) {
	body := fmt.Sprintf(`{"email":"load-%d-%d@example.com","display_name":"load %d"}`, time.Now().UnixNano(), n, n)
	var resp struct {
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		Token string `json:"token"`
	}
	if _, err := d.do(ctx, http.MethodPost, "/v1/users", "", "", body, http.StatusCreated, &resp); err != nil {
		return nil, fmt.Errorf("sign up: %w", err)
	}
	return &Client{ID: resp.User.ID, token: resp.Token, rng: rand.New(rand.NewPCG(uint64(n), uint64(time.Now().UnixNano())))}, nil
}

// DeleteUser deletes c's user (and with it every todo of theirs) and returns when the
// API acknowledged it.
func (d *Driver) DeleteUser(ctx context.Context, c *Client) error {
	if _, err := d.do(ctx, http.MethodDelete, "/v1/users/me", c.token, "", "", http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}

// CreateMany creates n todos for c from workers goroutines at once, without keeping
// them in c, and returns how many the API created and the first refusal.
func (d *Driver) CreateMany(ctx context.Context, c *Client, n, workers int) (int, error) {
	var (
		mu       sync.Mutex
		created  int
		firstErr error
		next     = make(chan struct{}, n)
	)
	for range n {
		next <- struct{}{}
	}
	close(next)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for range next {
				_, err := d.do(ctx, http.MethodPost, "/v1/todos", c.token, "", `{"title":"load test todo","priority":"normal"}`, http.StatusCreated, nil)
				mu.Lock()
				if err == nil {
					created++
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return created, firstErr
}

// Step runs one write of the mix for c and records it. Failures are recorded as
// errors, not returned: a load run counts them and carries on.
func (d *Driver) Step(ctx context.Context, c *Client) {
	open := -1
	for i, t := range c.todos {
		if !t.completed {
			open = i
			break
		}
	}
	switch d.mix.Pick(c.rng.IntN(100), open >= 0, len(c.todos) > 0) {
	case OpComplete:
		t := &c.todos[open]
		v, err := d.timed(ctx, RouteComplete, http.MethodPatch, "/v1/todos/"+t.id, c.token, strconv.Quote(strconv.FormatInt(t.version, 10)), `{"completed":true}`, http.StatusOK)
		if err == nil {
			t.version, t.completed = v, true
			d.sample(t.id, v)
		} else {
			c.drop(open)
		}
	case OpDelete:
		i := c.rng.IntN(len(c.todos))
		t := c.todos[i]
		_, _ = d.timed(ctx, RouteDelete, http.MethodDelete, "/v1/todos/"+t.id, c.token, strconv.Quote(strconv.FormatInt(t.version, 10)), "", http.StatusNoContent)
		c.drop(i)
	default:
		var resp struct {
			ID      string `json:"id"`
			Version int64  `json:"version"`
		}
		start := time.Now()
		_, err := d.do(ctx, http.MethodPost, "/v1/todos", c.token, "", `{"title":"load test todo","priority":"normal"}`, http.StatusCreated, &resp)
		d.record(ctx, RouteCreate, start, err)
		if err == nil {
			c.todos = append(c.todos, todo{id: resp.ID, version: resp.Version})
			d.sample(resp.ID, resp.Version)
		}
	}
}

func (c *Client) drop(i int) {
	c.todos[i] = c.todos[len(c.todos)-1]
	c.todos = c.todos[:len(c.todos)-1]
}

func (d *Driver) sample(id string, version int64) {
	if d.watch != nil {
		d.watch.Offer(id, version, time.Now())
	}
}

// record keeps one request's outcome; a request cut short because the phase ended is
// neither a latency nor an error of the API.
func (d *Driver) record(ctx context.Context, route string, start time.Time, err error) {
	now := time.Now()
	if err != nil && ctx.Err() != nil {
		return
	}
	d.rec.Add(route, stats.Sample{At: now, Latency: now.Sub(start), Err: err != nil})
}

// timed sends a write whose answer carries the new version in its ETag.
func (d *Driver) timed(ctx context.Context, route, method, path, token, ifMatch, body string, want int) (int64, error) {
	start := time.Now()
	etag, err := d.do(ctx, method, path, token, ifMatch, body, want, nil)
	d.record(ctx, route, start, err)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Unquote(etag)
	if err != nil {
		return 0, fmt.Errorf("etag %q: %w", etag, err)
	}
	return strconv.ParseInt(v, 10, 64)
}

func (d *Driver) do(ctx context.Context, method, path, token, ifMatch, body string, want int, out any) (etag string, err error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = bytes.NewReader([]byte(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+path, rd)
	if err != nil {
		return "", fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode != want {
		return "", fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return "", fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return resp.Header.Get("ETag"), nil
}

// Clients signs n users up, a few at a time.
func (d *Driver) Clients(ctx context.Context, n int) ([]*Client, error) {
	out := make([]*Client, n)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := d.SignUp(ctx, i)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			out[i] = c
		})
	}
	wg.Wait()
	return out, firstErr
}

// ClosedLoop runs every client in its own goroutine, back to back, until ctx ends.
func (d *Driver) ClosedLoop(ctx context.Context, clients []*Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				d.Step(ctx, c)
			}
		})
	}
	wg.Wait()
}

// OpenLoop sends rate writes per second until ctx ends, spread over the clients (each
// client one request at a time). A tick that finds every client busy is counted in
// the returned number of missed sends rather than queued, so that the offered rate is
// honest about what the API accepted.
func (d *Driver) OpenLoop(ctx context.Context, clients []*Client, rate float64) (sent, missed int) {
	idle := make(chan *Client, len(clients))
	for _, c := range clients {
		idle <- c
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; ; i++ {
		// Absolute deadlines, so the rate does not drift with scheduling delays.
		next := start.Add(time.Duration(i) * interval)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return sent, missed
		case <-t.C:
		}
		select {
		case c := <-idle:
			sent++
			wg.Go(func() {
				d.Step(ctx, c)
				idle <- c
			})
		default:
			missed++
		}
	}
}
