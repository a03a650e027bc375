package deploy

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDockerfiles checks what can be checked without a Docker daemon: one Dockerfile
// per image the manifests run, building each program its pods run from it (the image's
// own, its entrypoint, and any other a command names) as a static, trimmed binary into
// a distroless or scratch image whose user is the one the pods run as.
func TestDockerfiles(t *testing.T) {
	users := map[string]map[int64]bool{} // image -> runAsUser of its pods
	runs := map[string]map[string]bool{} // image -> the programs its pods run
	for _, o := range overlays {
		for _, w := range render(t, o).workloads() {
			for _, c := range containers(w.pod) {
				img := imageProgram(c.Image)
				if users[img] == nil {
					users[img], runs[img] = map[int64]bool{}, map[string]bool{img: true}
				}
				runs[img][containerProgram(c)] = true
				if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
					users[img][*c.SecurityContext.RunAsUser] = true
				} else if sc := w.pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil {
					users[img][*sc.RunAsUser] = true
				}
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(users)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lines := dockerfileLines(t, filepath.Join("docker", name+".Dockerfile"))
			final := -1
			for i, l := range lines {
				if strings.HasPrefix(l, "FROM ") {
					final = i
				}
			}
			if final < 0 {
				t.Fatal("no FROM")
			}
			if base := strings.Fields(lines[final])[1]; !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
				t.Errorf("final image %s: want distroless/static or scratch", base)
			}
			stage := lines[final:]
			for uid := range users[name] {
				if want := fmt.Sprintf("USER %d:%d", uid, uid); !slices.Contains(stage, want) {
					t.Errorf("final stage lacks %q, the user its pods run as", want)
				}
			}
			if want := `ENTRYPOINT ["/` + name + `"]`; !slices.Contains(stage, want) {
				t.Errorf("final stage lacks %s", want)
			}
			for _, prog := range slices.Sorted(maps.Keys(runs[name])) {
				checkBuild(t, lines, stage, prog)
			}
		})
	}
}

// checkBuild fails unless the Dockerfile's lines build prog's main package as a static,
// trimmed /out/prog that its final stage copies to /prog.
func checkBuild(t *testing.T, lines, stage []string, prog string) {
	t.Helper()
	i := slices.IndexFunc(lines, func(l string) bool {
		return strings.Contains(l, "go build ") && slices.Contains(strings.Fields(l), "/out/"+prog)
	})
	if i < 0 {
		t.Errorf("no go build of /out/%s", prog)
		return
	}
	build := strings.Fields(lines[i])
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath"} {
		if !slices.Contains(build, want) {
			t.Errorf("go build lacks %s: %s", want, lines[i])
		}
	}
	checkMainPackage(t, filepath.Join(repoRoot, build[len(build)-1]))
	if want := "COPY --from=build /out/" + prog + " /" + prog; !slices.Contains(stage, want) {
		t.Errorf("final stage lacks %q", want)
	}
}

// dockerfileLines returns the instructions of a Dockerfile, continuation lines joined
// and comments dropped.
func dockerfileLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		if more, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// checkMainPackage fails unless dir holds a main package.
func checkMainPackage(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("go build target: %v", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name.Name == "main" {
			return
		}
	}
	t.Errorf("go build target %s holds no main package", dir)
}
