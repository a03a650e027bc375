package app_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/migrations/dbtest"
	"github.com/outboxtodo/outboxtodo/services/api/internal/app"
	"github.com/outboxtodo/outboxtodo/services/api/internal/config"
	"github.com/outboxtodo/outboxtodo/shared/process"
	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// run runs the API as main does, configured from environ instead of the process
// environment.
func run(ctx context.Context, log *slog.Logger, environ map[string]string) error {
	return process.RunApp(ctx, log, func() (config.Config, error) { return config.FromMap(environ) }, app.New)
}

// TestSecretsNeverLogged runs the API's whole run path with a password in
// DATABASE_URL and a CURSOR_SECRET, sends requests carrying bearer tokens (valid,
// revoked, unknown and malformed) and users' passwords (sign-up, sign-in, change),
// then fails to start twice with the password in the URL, and checks that no log line
// holds the password, the secret, a user's password or a token.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	password := "pw-" + rand.Text()
	cursorSecret := "cs-" + rand.Text() + rand.Text()
	u, err := url.Parse(dbtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("postgres", password) // the test server trusts; the password is only carried
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "api", "debug")
	if err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{
		"DATABASE_URL": u.String(), "CURSOR_SECRET": cursorSecret,
		"API_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "localhost:0",
		// Cheap password hashes, by configuration as anywhere else.
		"PASSWORD_HASH_MEMORY": "1024", "PASSWORD_HASH_TIME": "1",
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, environ) }()
	base := "http://" + listeningAddr(t, logs, done)

	var secrets []string
	call := func(method, path, token, body string) (int, []byte) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer rcancel()
		r, err := http.NewRequestWithContext(rctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, b
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
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}

	// Start-up failures are logged once by process.Main; do the same here.
	for _, dbURL := range []string{
		"postgres://app:" + password + "@" + down + "/todo?sslmode=disable",
		"postgres://app:" + password + "@127.0.0.1:5432/todo?sslmode=bogus",
	} {
		environ["DATABASE_URL"] = dbURL
		err := run(context.Background(), log, environ)
		if err == nil {
			t.Fatalf("run started with %s", dbURL)
		}
		log.Error("exiting on error", "error", err)
	}

	out := logs.String()
	for _, want := range []string{`"msg":"starting"`, `"msg":"request"`, `"status":401`, `"msg":"exiting on error"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("the logs lack %s, so the test saw less than it should:\n%s", want, out)
		}
	}
	for _, s := range append(secrets, password, cursorSecret) {
		if strings.Contains(out, s) {
			t.Errorf("a secret (%.8s...) is in the logs", s)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

// startWithReadSideDown runs the API as main does until the test ends, with the
// settings of environ and a read side that is down: MongoDB and NATS at an address
// where nothing listens. It returns the logs, and the channel run's result comes on.
func startWithReadSideDown(t *testing.T, environ map[string]string) (*sharedtest.LogBuffer, <-chan error) {
	t.Helper()
	logs := &sharedtest.LogBuffer{}
	log, err := process.NewLogger(logs, "api", "info")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"API_ADDR": "127.0.0.1:0", "ADMIN_ADDR": "localhost:0",
		"NATS_URL": "nats://" + down, "MONGODB_URI": "mongodb://" + down + "/?directConnection=true", "MONGODB_TIMEOUT": "200ms",
	}
	maps.Copy(env, environ)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, log, env) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("run did not stop")
		}
	})
	return logs, done
}

// down is an address where nothing listens: port 1 is privileged and unused.
const down = "127.0.0.1:1"

// listeningAddr waits for run to log the API's address.
func listeningAddr(t *testing.T, logs *sharedtest.LogBuffer, done <-chan error) string {
	t.Helper()
	return loggedAddr(t, logs, done, "api server listening")
}

// loggedAddr waits for run to log the address of a listener with message msg.
func loggedAddr(t *testing.T, logs *sharedtest.LogBuffer, done <-chan error, msg string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for line := range strings.Lines(logs.String()) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
				return l.Addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run returned before listening: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the logs:\n%s", msg, logs.String())
		}
	}
}
