package deploy

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the workspace root, seen from this module's directory.
const repoRoot = ".."

// sharedEnvPkgs are the shared packages that read environment variables on behalf of
// the commands importing them: process (LOG_LEVEL for every command that runs through
// process.Main), natsconn (NATS credential and TLS files) and telemetry (the OTLP
// endpoint), keyed by import path, with their directory.
var sharedEnvPkgs = map[string]string{
	"github.com/outboxtodo/outboxtodo/shared/process":   filepath.Join(repoRoot, "shared", "process"),
	"github.com/outboxtodo/outboxtodo/shared/natsconn":  filepath.Join(repoRoot, "shared", "natsconn"),
	"github.com/outboxtodo/outboxtodo/shared/telemetry": filepath.Join(repoRoot, "shared", "telemetry"),
}

// program is what one command reads from its environment, taken from its Go source so
// that a renamed setting or a changed default breaks these tests.
type program struct {
	name     string
	reads    map[string]bool   // every variable it reads
	defaults map[string]string // envDefault of each env-tagged field that has one
	commands map[string]bool   // string cases of its switches: its subcommands, among others
}

// programs are the commands that run in the cluster, keyed by name: each image's own,
// under the image's name, and todoctl.
func programs(t *testing.T) map[string]program {
	t.Helper()
	progs := map[string]program{}
	// A main hands over to its composition root (app), which sets up tracing, or to its
	// operator commands (operate).
	for svc, internal := range map[string][]string{
		"api":       {"config", "app"},
		"publisher": {"config", "app", "operate"},
		"projector": {"config", "app", "operate"},
	} {
		dirs := []string{filepath.Join(repoRoot, "services", svc, "cmd", svc)}
		for _, pkg := range internal {
			dirs = append(dirs, filepath.Join(repoRoot, "services", svc, "internal", pkg))
		}
		progs[svc] = readProgram(t, svc, dirs...)
	}
	progs["migrate"] = readProgram(t, "migrate", filepath.Join(repoRoot, "migrations", "cmd", "migrate"))
	// The write side's operator tools, which the api image carries.
	progs["todoctl"] = readProgram(t, "todoctl",
		filepath.Join(repoRoot, "services", "api", "cmd", "todoctl"),
		filepath.Join(repoRoot, "services", "api", "internal", "todoctl"))
	return progs
}

// readProgram collects the env struct tags and os.Getenv/os.LookupEnv calls of the
// non-test Go files in dirs, and of the sharedEnvPkgs they import.
func readProgram(t *testing.T, name string, dirs ...string) program {
	t.Helper()
	p := program{name: name, reads: map[string]bool{}, defaults: map[string]string{}, commands: map[string]bool{}}
	seen := map[string]bool{}
	for i := 0; i < len(dirs); i++ {
		dir := dirs[i]
		if seen[dir] {
			continue
		}
		seen[dir] = true
		// A missing folder fails: a package that moved would otherwise shrink what is
		// checked without a word.
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatalf("read %s: %v", dir, err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatalf("parse %s: %v", filepath.Join(dir, e.Name()), err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				if dir, ok := sharedEnvPkgs[path]; ok {
					dirs = append(dirs, dir)
				}
			}
			collectEnv(f, &p)
		}
	}
	if len(p.reads) == 0 {
		t.Fatalf("%s: no environment variables found in %v", name, dirs)
	}
	return p
}

func collectEnv(f *ast.File, p *program) {
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Field:
			if n.Tag == nil {
				return true
			}
			raw, err := strconv.Unquote(n.Tag.Value)
			if err != nil {
				return true
			}
			tag := reflect.StructTag(raw)
			name, _, _ := strings.Cut(tag.Get("env"), ",")
			if name == "" || name == "-" { // "-": a field the environment does not set
				return true
			}
			p.reads[name] = true
			if def, ok := tag.Lookup("envDefault"); ok {
				p.defaults[name] = def
			}
		case *ast.CaseClause:
			for _, e := range n.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						p.commands[s] = true
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || len(n.Args) != 1 {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "os" || (sel.Sel.Name != "Getenv" && sel.Sel.Name != "LookupEnv") {
				return true
			}
			if lit, ok := n.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if name, err := strconv.Unquote(lit.Value); err == nil {
					p.reads[name] = true
				}
			}
		}
		return true
	})
}
