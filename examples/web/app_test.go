package web

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// screenshot is where the browser test leaves its picture of the app (gitignored).
const screenshot = "examples/web/e2e/screenshot.png"

// TestAgainstMakeRun starts what `make run` starts and checks, against it, that the
// committed client types are what the served OpenAPI document generates, and that the
// example app works in headless Chromium from an origin of its own.
func TestAgainstMakeRun(t *testing.T) {
	t.Parallel()
	requireNode(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it): %v", err)
	}

	// The app's origin is known before the API starts, which must allow it.
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Closed by the app's server once it serves; this covers a test that ends before.
	t.Cleanup(func() { _ = web.Close() })
	webOrigin := "http://" + web.Addr().String()
	apiURL := startSystem(t, map[string]string{
		"CORS_ALLOWED_ORIGINS": webOrigin,
		// Far above any projection lag of a loaded machine: a read with a consistency
		// token that still answers stale is a failure here, not a slow run.
		"READ_YOUR_WRITES_WAIT": "30s",
	})

	t.Run("GeneratedClientMatchesServedDocument", func(t *testing.T) {
		t.Parallel()
		checkGeneratedClient(t, apiURL)
	})
	t.Run("Browser", func(t *testing.T) {
		t.Parallel()
		serveApp(t, web)
		root := repoRoot(t)
		shot := filepath.Join(root, screenshot)
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		ctx := sharedtest.Context(t, 5*time.Minute)
		cmd := exec.CommandContext(ctx, "node", filepath.Join(root, "examples", "web", "e2e", "browser.mjs"))
		cmd.Env = append(os.Environ(),
			"WEB_URL="+webOrigin+"/?api="+url.QueryEscape(apiURL),
			"CHROMIUM="+chromium,
			"SCREENSHOT="+shot,
			"EMAIL=ada-"+hex.EncodeToString(b)+"@example.com")
		out, err := cmd.CombinedOutput()
		t.Logf("browser.mjs:\n%s", out)
		if err != nil {
			t.Fatalf("browser.mjs: %v", err)
		}
		t.Logf("screenshot: %s", shot)
	})
}

// serveApp builds the example app into a directory of the test's and serves it, beside
// its static files, on l until the test ends.
func serveApp(t *testing.T, l net.Listener) {
	t.Helper()
	built := t.TempDir()
	// The bundler's flags live in examples/web/package.json, shared with `make web`.
	npm(t, "run", "--silent", "--workspace", "examples/web", "build", "--", "--outfile="+filepath.Join(built, "app.js"))
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(repoRoot(t), "examples", "web", "www"))))
	for _, f := range []string{"/app.js", "/app.js.map"} {
		mux.HandleFunc(f, func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, filepath.Join(built, f))
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("stop the app's server: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("app's server: %v", err)
		}
	})
}
