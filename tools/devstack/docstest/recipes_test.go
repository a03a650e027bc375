package docstest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// The stream, consumers and membership bucket the docs name, as the publisher and
// projector create them with their default configuration.
const (
	streamName   = "TODO_EVENTS"
	projectorDur = "projector"
	partitions   = 16 // the publisher's STREAM_PARTITIONS
	membersKV    = "projector-members"
	// pinGroup is the projector's priority group (consumer.PinGroup, in a module this
	// one does not import).
	pinGroup = "projector"
)

// recipe is one fenced nats-recipe block: its commands in order, each with the texts
// its output must contain.
type recipe struct {
	file  string
	line  int
	steps []step
}

type step struct {
	line    int
	command string
	expect  []string
}

func TestRecipes(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	recipes := readRecipes(t, root)
	if len(recipes) == 0 {
		t.Fatal("no nats-recipe blocks found in the docs")
	}
	cli := natsCLI(t, root)

	srv := natsserver.NewTest(t, nil)
	values := seedStream(t, srv.ClientURL())
	// The CLI must not pick up a developer's nats contexts.
	cfgHome := t.TempDir()

	for i, r := range recipes {
		t.Run(fmt.Sprintf("%s:%d", r.file, r.line), func(t *testing.T) {
			vals := map[string]string{"consumer": fmt.Sprintf("replay_%d_%s", i, randHex(4))}
			for k, v := range values {
				vals[k] = v
			}
			for _, s := range r.steps {
				cmdline := substitute(t, s.command, vals)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				// Under a pseudo-terminal (util-linux script), as an operator runs it:
				// `nats stream view` refuses to page without one. -e passes the exit code on.
				cmd := exec.CommandContext(ctx, "script", "-qefc", cmdline, "/dev/null")
				cmd.Env = append(os.Environ(),
					"PATH="+filepath.Dir(cli)+string(os.PathListSeparator)+os.Getenv("PATH"),
					"NATS_URL="+srv.ClientURL(), "XDG_CONFIG_HOME="+cfgHome, "NATS_CONTEXT=")
				out, err := cmd.CombinedOutput()
				cancel()
				t.Logf("%s:%d $ %s\n%s", r.file, s.line, cmdline, out)
				if err != nil {
					t.Fatalf("%s:%d: %s: %v", r.file, s.line, cmdline, err)
				}
				for _, e := range s.expect {
					if want := substitute(t, e, vals); !strings.Contains(string(out), want) {
						t.Errorf("%s:%d: output of %s lacks %q", r.file, s.line, cmdline, want)
					}
				}
			}
		})
	}
}

// seedStream creates the stream (partitioned by owner), the projector's durable of
// every partition and its membership bucket as production has them, publishes the
// events of two users' writes the way the publisher does (subject per aggregate,
// Nats-Msg-Id = event id, type and version headers), lets the first user's partition
// durable acknowledge part of them, with the replica that holds it pinned, and
// returns the placeholder values.
func seedStream(t *testing.T, url string) map[string]string {
	t.Helper()
	_, js := natsserver.Connect(t, url)
	ctx := sharedtest.Context(t, 30*time.Second)
	// services/publisher/internal/stream.Spec.Config with the publisher's defaults.
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              streamName,
		Description:       "Outbox events of the todo service, one subject per aggregate",
		Subjects:          []string{event.StreamSubjects(event.DefaultSubjectPrefix)},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          1,
		Duplicates:        5 * time.Minute,
		MaxMsgsPerSubject: 100,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		SubjectTransform:  event.PartitionTransform(event.DefaultSubjectPrefix, partitions),
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}

	// Two users in different partitions, so that each recipe's counts are known.
	ada, bob := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	for event.PartitionOf(bob, partitions) == event.PartitionOf(ada, partitions) {
		bob = uuid.Must(uuid.NewV7())
	}
	adaPart := event.PartitionOf(ada, partitions)
	todo, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	now := time.Now().UTC().Add(-time.Minute)
	user := func(id uuid.UUID, email, name string, v int64) event.UserData {
		return event.UserData{ID: id, Email: email, DisplayName: name, Version: v, CreatedAt: now, UpdatedAt: now}
	}
	todoAt := func(id, owner uuid.UUID, title string, v int64, done bool) event.TodoData {
		d := event.TodoData{ID: id, UserID: owner, Title: title, Priority: "normal", Version: v, CreatedAt: now, UpdatedAt: now}
		if done {
			d.Completed, d.CompletedAt = true, &now
		}
		return d
	}
	writes := []struct {
		typ       string
		agg, user uuid.UUID
		version   int64
		data      any
	}{
		{event.UserCreated, ada, ada, 1, user(ada, "ada@example.com", "Ada", 1)},
		{event.UserCreated, bob, bob, 1, user(bob, "bob@example.com", "Bob", 1)},
		{event.TodoCreated, todo, ada, 1, todoAt(todo, ada, "write the outbox", 1, false)},
		{event.TodoUpdated, todo, ada, 2, todoAt(todo, ada, "write the outbox", 2, true)},
		{event.TodoCreated, other, bob, 1, todoAt(other, bob, "review", 1, false)},
		{event.UserUpdated, ada, ada, 2, user(ada, "ada@example.com", "Ada L.", 2)},
		{event.TodoDeleted, other, bob, 2, event.Tombstone{ID: other, OwnerID: bob, Version: 2, DeletedAt: now}},
	}
	var firstID string
	for i, w := range writes {
		e, err := event.New(w.typ, w.agg, w.user, w.version, now.Add(time.Duration(i)*time.Second),
			event.TraceContext{RequestID: "req-" + strconv.Itoa(i)}, w.data)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		body, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(event.Subject(event.DefaultSubjectPrefix, e))
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, e.ID.String())
		msg.Header.Set("Event-Type", e.Type)
		msg.Header.Set("Aggregate-Version", strconv.FormatInt(e.Version, 10))
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i == 0 {
			firstID = e.ID.String()
		}
	}

	// The projector's durables, one per partition (services/projector/internal/
	// partition), and its replicas' heartbeats and claims: two replicas share the
	// partitions. Nothing refreshes them here, so the bucket has no TTL (the
	// projector's has MEMBER_TTL).
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: membersKV,
		Description: "Projector replicas (m.<member>) and who consumes which partition (c.<unit>)"})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	members := []string{"projector-7f9c6d5b8-x2k4q-3f1a9c2e", "projector-7f9c6d5b8-p8m3z-b04d7e51"}
	for _, m := range members {
		if _, err := kv.Put(ctx, "m."+m, []byte(now.Format(time.RFC3339Nano))); err != nil {
			t.Fatal(err)
		}
	}
	for p := range partitions {
		if _, err := kv.Put(ctx, fmt.Sprintf("c.p%d", p), []byte(members[p%2])); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("%s-p%d", projectorDur, p), FilterSubject: event.PartitionFilter(event.DefaultSubjectPrefix, p),
			DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
			MaxDeliver: -1, MaxAckPending: 1000,
			// The projector's PinnedTTL is MEMBER_TTL, kept alive by its pulls; nothing
			// pulls here after the fetch below, so the pin must outlast the test.
			PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{pinGroup}, PinnedTTL: time.Hour,
		}); err != nil {
			t.Fatalf("create consumer: %v", err)
		}
	}
	// Ada's partition's replica has applied her first two events (of four).
	cons, err := js.Consumer(ctx, streamName, fmt.Sprintf("%s-p%d", projectorDur, adaPart))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(pinGroup))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("projector consumer got %d messages, want 2 (%v)", n, batch.Error())
	}

	return map[string]string{
		"user_id":   ada.String(),
		"todo_id":   todo.String(),
		"seq":       "3",
		"event_id":  firstID,
		"partition": strconv.Itoa(adaPart),
	}
}

var placeholderRE = regexp.MustCompile(`<([a-z_]+)>`)

// substitute fills the placeholders of s; an unknown one fails the test, so the docs
// cannot use a placeholder this test does not give a real value.
func substitute(t *testing.T, s string, vals map[string]string) string {
	t.Helper()
	return placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		v, ok := vals[m[1:len(m)-1]]
		if !ok {
			t.Fatalf("unknown placeholder %s in %q", m, s)
		}
		return v
	})
}

// readRecipes collects the nats-recipe blocks of README.md and docs/*.md, and fails
// the test on a `nats` command outside one.
func readRecipes(t *testing.T, root string) []recipe {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	var all []recipe
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		rs, err := parseRecipes(rel, f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
	}
	return all
}

func parseRecipes(name, path string) ([]recipe, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		out     []recipe
		cur     *recipe
		inFence bool
		pending string // a command continued with a trailing backslash
		lineNo  int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			switch {
			case !inFence:
				inFence = true
				if fields := strings.Fields(strings.TrimPrefix(trimmed, "```")); len(fields) == 2 && fields[0] == "sh" && fields[1] == "nats-recipe" {
					cur = &recipe{file: name, line: lineNo}
				}
			default:
				inFence = false
				if pending != "" {
					return nil, fmt.Errorf("%s:%d: block ends inside a continued command", name, lineNo)
				}
				if cur != nil {
					if len(cur.steps) == 0 {
						return nil, fmt.Errorf("%s:%d: empty nats-recipe block", name, cur.line)
					}
					out = append(out, *cur)
					cur = nil
				}
			}
			continue
		}
		if !inFence {
			continue
		}
		if cur == nil {
			if strings.HasPrefix(trimmed, "nats ") || strings.HasPrefix(trimmed, "$ nats ") {
				return nil, fmt.Errorf("%s:%d: a nats command outside a ```sh nats-recipe block is not tested: %s", name, lineNo, trimmed)
			}
			continue
		}
		switch {
		case pending != "":
			pending += " " + strings.TrimSuffix(trimmed, `\`)
			if !strings.HasSuffix(trimmed, `\`) {
				cur.steps = append(cur.steps, step{line: lineNo, command: pending})
				pending = ""
			}
		case trimmed == "":
		case strings.HasPrefix(trimmed, "# expect:"):
			if len(cur.steps) == 0 {
				return nil, fmt.Errorf("%s:%d: expect before any command", name, lineNo)
			}
			s := &cur.steps[len(cur.steps)-1]
			s.expect = append(s.expect, strings.TrimSpace(strings.TrimPrefix(trimmed, "# expect:")))
		case strings.HasPrefix(trimmed, "#"):
		case strings.HasPrefix(trimmed, "nats "):
			if strings.HasSuffix(trimmed, `\`) {
				pending = strings.TrimSuffix(trimmed, `\`)
				continue
			}
			cur.steps = append(cur.steps, step{line: lineNo, command: trimmed})
		default:
			return nil, fmt.Errorf("%s:%d: a nats-recipe block holds only nats commands and comments: %s", name, lineNo, trimmed)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if inFence {
		return nil, fmt.Errorf("%s: unterminated code block", name)
	}
	return out, nil
}

// natsCLI returns the nats CLI to run: NATS_CLI when set, else NatsCLIVersion
// installed from the Go module proxy into <root>/.cache/bin (once; later runs reuse it).
func natsCLI(t *testing.T, root string) string {
	t.Helper()
	if p := os.Getenv("NATS_CLI"); p != "" {
		return p
	}
	dir := filepath.Join(root, ".cache", "bin")
	bin := filepath.Join(dir, "nats")
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err == nil && strings.TrimSpace(string(out)) == NatsCLIVersion {
		return bin
	}
	ctx := sharedtest.Context(t, 10*time.Minute)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/nats-io/natscli/nats@"+NatsCLIVersion)
	// Outside the workspace: the CLI's own go.mod decides its dependencies.
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install nats CLI %s: %v\n%s", NatsCLIVersion, err, out)
	}
	return bin
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
