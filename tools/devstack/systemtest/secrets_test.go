package systemtest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/shared/admin"
	"github.com/outboxtodo/outboxtodo/shared/event"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
	"github.com/outboxtodo/outboxtodo/tools/devstack/child"
	"github.com/outboxtodo/outboxtodo/tools/devstack/ferret"
	"github.com/outboxtodo/outboxtodo/tools/devstack/natsserver"
)

// TestSecretsNeverLogged runs each service's binary at debug level with secrets in its
// configuration, drives it through the paths that handle secrets, stops it with
// SIGTERM, then fails to start it in every way that puts a secret next to an error,
// and checks that the logs hold what the test must have seen and no secret at all.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	bin := build(t, "api", "publisher", "projector")
	for _, tc := range []struct {
		service string // its binary is built from services/<service>/cmd/<service>
		setup   func(t *testing.T, n natsAuth) secretsCase
		// wants are what the logs must hold, or the test saw less than it should.
		wants []string
	}{
		{"api", apiCase, []string{`"msg":"starting"`, `"msg":"request"`, `"status":401`, `"msg":"exiting on error"`}},
		{"publisher", publisherCase, []string{`"msg":"starting"`, `"msg":"event published"`,
			`"request_id":"` + requestID + `"`, `"msg":"exiting on error"`, "Authorization Violation"}},
		{"projector", projectorCase, []string{`"msg":"starting"`, `"msg":"event applied"`,
			`"request_id":"` + requestID + `"`, `"msg":"exiting on error"`, "Authorization Violation"}},
	} {
		t.Run(tc.service, func(t *testing.T) {
			t.Parallel()
			n := startNATS(t, tc.service)
			c := tc.setup(t, n)
			env := maps.Clone(c.env)
			// Its own admin port, which the kernel picks: localhost, since the API
			// refuses an ADMIN_ADDR equal to its API_ADDR of 127.0.0.1:0.
			env["LOG_LEVEL"], env["ADMIN_ADDR"] = "debug", "localhost:0"
			logs := &sharedtest.LogBuffer{}
			p := start(t, filepath.Join(bin, tc.service), env, logs)
			secrets := append(c.secrets, c.exercise(t, p)...)
			p.terminate(t)
			for _, change := range c.failures {
				failStart(t, filepath.Join(bin, tc.service), env, change, logs)
			}

			out := logs.String()
			for _, want := range tc.wants {
				if !strings.Contains(out, want) {
					t.Fatalf("the logs lack %s, so the test saw less than it should:\n%s", want, out)
				}
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("a secret (%.8s...) is in the logs", s)
				}
			}
			if t.Failed() {
				t.Log(out)
			}
		})
	}
}

// secretsCase is how TestSecretsNeverLogged runs one service.
type secretsCase struct {
	// env is the environment of a start that works, built from the test's servers.
	env map[string]string
	// secrets are what env carries that no log line may show.
	secrets []string
	// exercise drives the running service through the paths that handle secrets until
	// it has logged what the test wants, and returns the secrets it handed the service
	// on the way.
	exercise func(t *testing.T, p *proc) []string
	// failures each change env so that the service exits on error at start.
	failures []map[string]string
}

// apiCase runs the API with passwords in DATABASE_URL, NATS_URL and MONGODB_URI (a
// MongoDB where nothing listens: the API starts without its read side) and a CURSOR_SECRET,
// sends requests carrying bearer tokens (valid, revoked, unknown and malformed) and
// users' passwords (sign-up, sign-in, change), then fails to start twice with the
// password in the database URL.
func apiCase(t *testing.T, n natsAuth) secretsCase {
	dbPassword, mongoPassword := "dp-"+rand.Text(), "mp-"+rand.Text()
	cursorSecret := "cs-" + rand.Text() + rand.Text()
	return secretsCase{
		env: map[string]string{
			"DATABASE_URL": carryPassword(t, dbtest.New(t), dbPassword), "CURSOR_SECRET": cursorSecret,
			"NATS_URL": n.url, "MONGODB_URI": "mongodb://api:" + mongoPassword + "@" + down + "/?directConnection=true",
			"API_ADDR": "127.0.0.1:0",
			// Cheap password hashes, by configuration as anywhere else.
			"PASSWORD_HASH_MEMORY": "1024", "PASSWORD_HASH_TIME": "1",
		},
		secrets:  []string{dbPassword, cursorSecret, n.password, mongoPassword},
		exercise: exerciseAPI,
		failures: []map[string]string{
			{"DATABASE_URL": "postgres://app:" + dbPassword + "@" + down + "/todo?sslmode=disable"},
			{"DATABASE_URL": "postgres://app:" + dbPassword + "@127.0.0.1:5432/todo?sslmode=bogus"},
		},
	}
}

// exerciseAPI signs users up and in, issues, uses and revokes tokens, changes a
// password and tries bad tokens, and returns the tokens and passwords it sent.
func exerciseAPI(t *testing.T, p *proc) []string {
	base := "http://" + p.await(t, "api server listening", "addr")
	var secrets []string
	call := func(method, path, token, body string) (int, []byte) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		header := http.Header{}
		if body != "" {
			header.Set("Content-Type", "application/json")
		}
		if token != "" {
			header.Set("Authorization", "Bearer "+token)
		}
		return sharedtest.Request(t, rctx, method, base+path, header, strings.NewReader(body))
	}
	tokenOf := func(b []byte) string {
		t.Helper()
		var v struct{ Token string }
		if err := json.Unmarshal(b, &v); err != nil || v.Token == "" {
			t.Fatalf("no token in %s", b)
		}
		secrets = append(secrets, v.Token)
		return v.Token
	}

	status, b := call("POST", "/v1/users", "", `{"email":"s@example.com","display_name":"S"}`)
	if status != http.StatusCreated {
		t.Fatalf("sign-up: %d %s", status, b)
	}
	first := tokenOf(b)
	status, b = call("POST", "/v1/users/me/tokens", first, "")
	if status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, b)
	}
	second := tokenOf(b)
	for range 3 {
		call("POST", "/v1/todos", second, `{"title":"t"}`)
	}
	status, b = call("GET", "/v1/todos?limit=1&token="+second, second, "")
	if status != http.StatusBadRequest { // token is not a parameter: rejected, and the query is not logged
		t.Fatalf("list with a token parameter: %d %s", status, b)
	}
	if status, _ := call("DELETE", "/v1/users/me/tokens/current", first, ""); status != http.StatusNoContent {
		t.Fatalf("revoke: %d", status)
	}
	// Passwords: set at sign-up, tried wrong and right, changed.
	pw, wrong, changed := "pw1-"+rand.Text(), "pw2-"+rand.Text(), "pw3-"+rand.Text()
	secrets = append(secrets, pw, wrong, changed)
	status, b = call("POST", "/v1/users", "", `{"email":"p@example.com","display_name":"P","password":"`+pw+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("sign-up with a password: %d %s", status, b)
	}
	withPassword := tokenOf(b)
	if status, b := call("POST", "/v1/sessions", "", `{"email":"p@example.com","password":"`+wrong+`"}`); status != http.StatusUnauthorized {
		t.Fatalf("sign-in with a wrong password: %d %s", status, b)
	}
	status, b = call("POST", "/v1/sessions", "", `{"email":"p@example.com","password":"`+pw+`"}`)
	if status != http.StatusCreated {
		t.Fatalf("sign-in: %d %s", status, b)
	}
	tokenOf(b)
	body := `{"password":"` + changed + `","current_password":"` + pw + `"}`
	if status, b := call("PUT", "/v1/users/me/password", withPassword, body); status != http.StatusNoContent {
		t.Fatalf("password change: %d %s", status, b)
	}
	unknown := "tdo_" + strings.Repeat("Q", 43)
	secrets = append(secrets, unknown)
	for _, tok := range []string{first, unknown, second + "x", "garbage-" + second} {
		if status, _ := call("GET", "/v1/users/me", tok, ""); status != http.StatusUnauthorized {
			t.Fatalf("bad token answered %d", status)
		}
	}
	return secrets
}

// publisherCase runs the publisher against a NATS server that requires a password and
// with a database URL that carries one, has it publish an outbox row, then fails to
// start it with a wrong NATS password, an nkey seed the server does not know and an
// unreachable database.
func publisherCase(t *testing.T, n natsAuth) secretsCase {
	dbPassword := "dp-" + rand.Text()
	pool, dbURL := dbtest.NewPool(t)
	return secretsCase{
		env: map[string]string{"DATABASE_URL": carryPassword(t, dbURL, dbPassword), "NATS_URL": n.url,
			"WAKE_MODE": "poll", "POLL_MAX": "50ms"},
		secrets: []string{n.password, dbPassword, n.seed},
		exercise: func(t *testing.T, p *proc) []string {
			ctx := sharedtest.Context(t, 10*time.Second)
			ev := userCreated(t)
			if err := sharedtest.WriteOutbox(ctx, pool, ev); err != nil {
				t.Fatal(err)
			}
			p.await(t, "event published", "")
			return nil
		},
		failures: append(n.failures(),
			map[string]string{"DATABASE_URL": "postgres://app:" + dbPassword + "@" + down + "/todo?sslmode=disable"}),
	}
}

// projectorCase runs the projector against a NATS server that requires a password,
// has it apply an event, then fails to start it with a wrong NATS password, an nkey
// seed the server does not know, a MongoDB URI with a password and one with a client
// key passphrase.
func projectorCase(t *testing.T, n natsAuth) secretsCase {
	mongoPassword, keyPassphrase := "mp-"+rand.Text(), "kp-"+rand.Text()
	readModel := ferret.StartTest(t)
	ctx := sharedtest.Context(t, 30*time.Second)
	_, js := natsserver.Connect(t, n.url)
	// The stream as the publisher would have made it, before the projector binds to it.
	stream := jetstream.StreamConfig{Name: "TODO_EVENTS", Subjects: []string{event.StreamSubjects(event.DefaultSubjectPrefix)}}
	if _, err := js.CreateStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	return secretsCase{
		env: map[string]string{"NATS_URL": n.url, "STREAM_NAME": stream.Name, "MONGODB_URI": readModel.URI(),
			"MONGODB_TIMEOUT": "1s", "FETCH_WAIT": "100ms"},
		secrets: []string{n.password, mongoPassword, keyPassphrase, n.seed},
		exercise: func(t *testing.T, p *proc) []string {
			ctx := sharedtest.Context(t, 10*time.Second)
			ev := userCreated(t)
			body, err := ev.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, event.Subject(event.DefaultSubjectPrefix, ev), body); err != nil {
				t.Fatal(err)
			}
			p.await(t, "event applied", "")
			return nil
		},
		failures: append(n.failures(),
			map[string]string{"MONGODB_URI": "mongodb://projector:" + mongoPassword + "@" + down + "/?directConnection=true"},
			map[string]string{"MONGODB_URI": "mongodb://" + down + "/?tls=true&tlsCertificateKeyFile=" + n.seedFile +
				"&tlsCertificateKeyFilePassword=" + keyPassphrase}),
	}
}

// requestID is the request id of the event the publisher and the projector handle, which
// their logs must show.
const requestID = "req-secret-test"

// userCreated is a sign-up's event, as the API writes it.
func userCreated(t *testing.T) event.Envelope {
	t.Helper()
	id := uuid.New()
	now := time.Now().UTC()
	ev, err := event.New(event.UserCreated, id, id, 1, now, event.TraceContext{RequestID: requestID},
		event.UserData{ID: id, Email: "s@example.com", DisplayName: "S", Version: 1, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// down is an address where nothing listens: port 1 is privileged and unused.
const down = "127.0.0.1:1"

// carryPassword is the PostgreSQL URL rawURL with a password: the test server trusts,
// so the password is only carried.
func carryPassword(t *testing.T, rawURL, password string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", password)
	return u.String()
}

// natsAuth is a NATS server of the test's own whose one user, named for the service,
// signs in with a password; and an nkey seed the server does not know.
type natsAuth struct {
	server   *natsserver.Server
	password string
	url      string // the server's, with the user and password in it
	seed     string
	seedFile string
}

func startNATS(t *testing.T, user string) natsAuth {
	t.Helper()
	unknown := natsserver.NewNkeyUser(t) // not among the server's users
	n := natsAuth{password: "np-" + rand.Text(), seed: unknown.Seed, seedFile: unknown.SeedFile}
	n.server = natsserver.StartTest(t, natsserver.Config{Users: []natsserver.User{{Name: user, Password: n.password}}})
	n.url = strings.Replace(n.server.ClientURL(), "nats://", "nats://"+user+":"+n.password+"@", 1)
	return n
}

// failures are the changes to a service's environment that make it fail to sign in
// to NATS: a wrong password, and the unknown nkey seed.
func (n natsAuth) failures() []map[string]string {
	return []map[string]string{
		{"NATS_URL": strings.Replace(n.url, n.password, n.password+"x", 1)},
		{"NATS_URL": n.server.ClientURL(), "NATS_NKEY_SEED": n.seedFile},
	}
}

// build builds the named services' commands into a directory of the test's, and
// returns it. The builds use the Go build cache, so only the links take time.
func build(t *testing.T, services ...string) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range services {
		args = append(args, "github.com/outboxtodo/outboxtodo/services/"+s+"/cmd/"+s)
	}
	if out, err := exec.CommandContext(t.Context(), "go", args...).CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

// proc is a service binary running for a test.
type proc struct {
	cmd   *exec.Cmd
	logs  *sharedtest.LogBuffer
	stop  context.CancelFunc // sends SIGTERM
	alive context.Context    // done once the process ended
}

// start runs the binary bin with exactly the environment env (nothing inherited),
// its output to logs, until the test ends; and waits until its admin server, on a
// port the kernel picks, says it is ready.
func start(t *testing.T, bin string, env map[string]string, logs *sharedtest.LogBuffer) *proc {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	cmd := child.Command(ctx, bin, environ(env), logs, logs)
	if err := cmd.Start(); err != nil {
		stop()
		t.Fatalf("start %s: %v", bin, err)
	}
	alive, ended := context.WithCancel(context.Background())
	go func() {
		_ = cmd.Wait() // the exit status is in ProcessState
		ended()
	}()
	p := &proc{cmd: cmd, logs: logs, stop: stop, alive: alive}
	t.Cleanup(func() {
		stop()
		<-alive.Done()
	})
	addr := p.await(t, "admin server listening", "addr")
	if err := child.WaitHealthy(alive, "http://"+addr+admin.ReadyPath); err != nil {
		t.Fatalf("%s not ready: %v\n%s", bin, err, logs)
	}
	return p
}

// await waits for the process to log msg, and returns the line's field (see
// LogBuffer.Await). It fails the test at once if the process ends first.
func (p *proc) await(t *testing.T, msg, field string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(p.alive, time.Minute)
	defer cancel()
	return p.logs.Await(t, ctx, msg, field)
}

// terminate sends SIGTERM, and fails the test unless the process then exits 0 within
// its drain time.
func (p *proc) terminate(t *testing.T) {
	t.Helper()
	p.stop()
	<-p.alive.Done()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit status %d after SIGTERM:\n%s", code, p.logs)
	}
}

// failStart runs the binary bin with env changed by change, which must make it fail
// to start: it must exit on its own with status 1, as process.Main does once it logged
// the error.
func failStart(t *testing.T, bin string, env, change map[string]string, logs *sharedtest.LogBuffer) {
	t.Helper()
	env = maps.Clone(env)
	maps.Copy(env, change)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := child.Command(ctx, bin, environ(env), logs, logs).Run()
	var exit *exec.ExitError
	if ctx.Err() != nil || !errors.As(err, &exit) || exit.ExitCode() != 1 {
		// The variables' names only: their values hold the secrets.
		t.Fatalf("with %v changed: %v (%v), want exit status 1 within 30s\n%s", slices.Sorted(maps.Keys(change)), err, ctx.Err(), logs)
	}
}

// environ is env as a process's environment.
func environ(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}
