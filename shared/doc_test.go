package shared_test

import (
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
)

// TestDocListsEveryPackage checks that the package comment names every package of the
// module, and no package that is gone.
func TestDocListsEveryPackage(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, l := range strings.Split(string(doc), "\n") {
		if item, ok := strings.CutPrefix(l, "//   - "); ok {
			name, _, _ := strings.Cut(item, ":")
			listed[name] = true
		}
	}
	pkgs := map[string]bool{}
	err = fs.WalkDir(os.DirFS("."), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && p != "doc.go" && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			pkgs[path.Dir(p)] = true
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
