package web

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// requireNode fails the test, with what to install, unless Node.js, npm and the
// repository's npm packages are there.
func requireNode(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: the TypeScript client and the example web app need Node.js 20+ and npm (Debian: apt-get install -y nodejs npm; .ci/run installs them): %v", tool, err)
		}
	}
	// npm ci writes this file last; the Makefile's npm target keys on it too.
	if _, err := os.Stat(filepath.Join(repoRoot(t), "node_modules", ".package-lock.json")); err != nil {
		t.Fatalf("the npm packages are not installed: run `make npm` (npm ci at the repository root): %v", err)
	}
}

// npm runs npm at the repository's root with args and returns its combined output,
// failing the test if it fails.
func npm(t *testing.T, args ...string) string {
	t.Helper()
	requireNode(t)
	ctx := sharedtest.Context(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, "npm", args...)
	cmd.Dir = repoRoot(t)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm %v: %v\n%s", args, err, b)
	}
	return string(b)
}
