package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readmeRow is one row of the README's configuration table.
type readmeRow struct {
	services []string
	def      string
}

var readmeRowRE = regexp.MustCompile("^\\| `([A-Z0-9_]+)` \\| ([^|]+) \\| ([^|]+) \\|")

// TestReadmeListsEverySetting keeps the README's configuration table true: every
// variable a service reads is listed for that service with its default, and every row
// names only services that read it.
func TestReadmeListsEverySetting(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "## Configuration")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	// The services' table is the first one of the section; it ends at a blank line.
	rows := map[string]readmeRow{}
	inTable := false
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "|") {
			inTable = true
		} else if inTable {
			break
		}
		m := readmeRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var svcs []string
		for _, s := range strings.Split(m[2], ",") {
			s = strings.TrimSpace(s)
			if s == "all" {
				svcs = append(svcs, "api", "publisher", "projector")
				continue
			}
			svcs = append(svcs, s)
		}
		rows[m[1]] = readmeRow{services: svcs, def: m[3]}
	}
	if len(rows) < 20 {
		t.Fatalf("found only %d rows in the README's configuration table", len(rows))
	}

	progs := programs(t)
	for name, p := range progs {
		for v := range p.reads {
			row, ok := rows[v]
			switch {
			case !ok:
				t.Errorf("%s reads %s, which the README's configuration table does not list", name, v)
			case !slices.Contains(row.services, name):
				t.Errorf("README: %s is read by %s, but its row names %v", v, name, row.services)
			case p.defaults[v] != "" && !strings.Contains(row.def, "`"+p.defaults[v]+"`"):
				t.Errorf("README: %s defaults to %q in %s, but the table says %s", v, p.defaults[v], name, strings.TrimSpace(row.def))
			}
		}
	}
	for v, row := range rows {
		for _, svc := range row.services {
			p, known := progs[svc]
			if !known {
				if strings.Contains(svc, " ") || svc == "" {
					continue // prose, not a service name
				}
				t.Errorf("README: row %s names %q, which is not a service", v, svc)
				continue
			}
			if !p.reads[v] {
				t.Errorf("README: row %s says %s reads it, but it does not", v, svc)
			}
		}
	}
}
