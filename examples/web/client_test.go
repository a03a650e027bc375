package web

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxtodo/outboxtodo/shared/sharedtest"
)

// committedSchema is the generated half of the client, as committed.
const committedSchema = "clients/ts/src/schema.d.ts"

// TestTypeScriptTypeChecks runs tsc over the client and the example app: a call that
// does not match the generated types (a renamed field, a removed route) fails here.
func TestTypeScriptTypeChecks(t *testing.T) {
	t.Parallel()
	for _, workspace := range []string{"clients/ts", "examples/web"} {
		t.Run(workspace, func(t *testing.T) {
			t.Parallel()
			npm(t, "run", "--silent", "--workspace", workspace, "typecheck")
		})
	}
}

// checkGeneratedClient regenerates the client's types from the OpenAPI document the
// running API serves and fails on any difference from the committed ones.
func checkGeneratedClient(t *testing.T, apiURL string) {
	t.Helper()
	dir := t.TempDir()
	doc := filepath.Join(dir, "openapi.json")
	ctx := sharedtest.Context(t, 10*time.Second)
	if err := os.WriteFile(doc, []byte(sharedtest.Fetch(t, ctx, apiURL+"/openapi.json")), 0o644); err != nil {
		t.Fatal(err)
	}
	generated := filepath.Join(dir, "schema.d.ts")
	// The generator's flags live in clients/ts/package.json, shared with `make client`.
	npm(t, "run", "--silent", "--workspace", "clients/ts", "generate", "--", doc, "--output", generated)
	got, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(repoRoot(t), committedSchema))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what the served OpenAPI document generates: run `make client` and commit it.\n%s", committedSchema, firstDifference(want, got))
	}
	t.Logf("%s: %d bytes, what the served document generates", committedSchema, len(got))
}

// firstDifference shows the first line where committed and generated differ.
func firstDifference(committed, generated []byte) string {
	c, g := strings.Split(string(committed), "\n"), strings.Split(string(generated), "\n")
	for i := 0; i < max(len(c), len(g)); i++ {
		var cl, gl string
		if i < len(c) {
			cl = c[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if cl != gl || i >= len(c) || i >= len(g) {
			return fmt.Sprintf("first difference at line %d:\n  committed: %q\n  generated: %q", i+1, cl, gl)
		}
	}
	return "the files differ"
}
