package shared_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocListsEveryPackage checks that the package comment names every package of the
// module, and no package that is gone.
func TestDocListsEveryPackage(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(f.Doc.Text(), "\n") {
		if item, ok := strings.CutPrefix(strings.TrimSpace(l), "- "); ok {
			name, _, _ := strings.Cut(item, ":")
			listed[name] = true
		}
	}
	pkgs := map[string]bool{}
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && path != "doc.go" && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			pkgs[filepath.ToSlash(filepath.Dir(path))] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg := range pkgs {
		if !listed[pkg] {
			t.Errorf("package %s is not listed in doc.go", pkg)
		}
	}
	for pkg := range listed {
		if !pkgs[pkg] {
			t.Errorf("doc.go lists %s, which holds no package", pkg)
		}
	}
}
