package deploy

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
	"github.com/outboxtodo/outboxtodo/shared/postgres"
)

const (
	observabilityDir = "observability"
	// runbookBase is where every alert's runbook_url points: a section of
	// docs/OPERATIONS.md as the repository's host renders it.
	runbookBase = "https://github.com/outboxtodo/outboxtodo/blob/main/docs/OPERATIONS.md#"
)

// ruleGroups is a Prometheus rule file, as alerts.yml holds it and as a PrometheusRule's
// spec does.
type ruleGroups struct {
	Groups []ruleGroup `json:"groups"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []rule `json:"rules"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func readAlerts(t *testing.T) ruleGroups {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(observabilityDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var g ruleGroups
	if err := yaml.UnmarshalStrict(b, &g); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	if len(g.Groups) == 0 {
		t.Fatal("alerts.yml holds no rule group")
	}
	return g
}

func (g ruleGroups) alerts() []rule {
	var out []rule
	for _, grp := range g.Groups {
		out = append(out, grp.Rules...)
	}
	return out
}

// section is one heading of a Markdown document with the text up to the next heading
// of the same or a higher level.
type section struct {
	title, body string
}

var heading = regexp.MustCompile(`^(#{1,6}) (.+)$`)

// sections maps the GitHub anchor of every heading of a Markdown file to its section.
func sections(t *testing.T, path string) map[string]section {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type open struct {
		anchor string
		level  int
		lines  []string
	}
	out := map[string]section{}
	var stack []*open
	closeTo := func(level int) {
		for len(stack) > 0 && stack[len(stack)-1].level >= level {
			o := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			s := out[o.anchor]
			s.body = strings.Join(o.lines, "\n")
			out[o.anchor] = s
		}
	}
	fenced := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
		}
		if m := heading.FindStringSubmatch(l); m != nil && !fenced {
			closeTo(len(m[1]))
			a := anchor(m[2])
			out[a] = section{title: m[2]}
			stack = append(stack, &open{anchor: a, level: len(m[1])})
			continue
		}
		for _, o := range stack {
			o.lines = append(o.lines, l)
		}
	}
	closeTo(1)
	return out
}

var anchorDrop = regexp.MustCompile(`[^\p{L}\p{N} _-]`)

// anchor is the id GitHub gives a heading: lower case, punctuation dropped, spaces
// turned into hyphens.
func anchor(title string) string {
	return strings.ReplaceAll(anchorDrop.ReplaceAllString(strings.ToLower(strings.TrimSpace(title)), ""), " ", "-")
}

func TestAnchor(t *testing.T) {
	t.Parallel()
	for title, want := range map[string]string{
		"A service is down":                    "a-service-is-down",
		"Parked outbox rows (the publisher's)": "parked-outbox-rows-the-publishers",
		"Partitions: who holds what":           "partitions-who-holds-what",
		"/health/sync":                         "healthsync",
	} {
		if got := anchor(title); got != want {
			t.Errorf("anchor(%q) = %q, want %q", title, got, want)
		}
	}
}

// TestRulesLoad loads alerts.yml as Prometheus does (rulefmt: the file's fields, every
// expression's PromQL, the annotations' templates), and parses every dashboard query.
func TestRulesLoad(t *testing.T) {
	t.Parallel()
	p := parser.NewParser(parser.Options{})
	_, errs := rulefmt.ParseFile(filepath.Join(observabilityDir, "alerts.yml"), false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	refs, err := observability.Refs()
	if err != nil {
		t.Fatal(err)
	}
	// Grafana replaces its variables before Prometheus sees the query.
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$namespace", "outboxtodo")
	for _, where := range refs {
		for _, w := range where {
			if x, ok := strings.CutPrefix(w, "dashboard.json: "); ok {
				if _, err := p.ParseExpr(grafana.Replace(x)); err != nil {
					t.Errorf("dashboard query %s: %v", x, err)
				}
			}
		}
	}
}

// TestAlertsHaveRunbooks checks that every alert links to a section of
// docs/OPERATIONS.md that exists and names it, so that whoever is paged finds what to
// check and what to do.
func TestAlertsHaveRunbooks(t *testing.T) {
	t.Parallel()
	secs := sections(t, filepath.Join(repoRoot, "docs", "OPERATIONS.md"))
	used := map[string]bool{}
	for _, r := range readAlerts(t).alerts() {
		if r.Alert == "" {
			t.Errorf("a rule without an alert name (recording rules have no place here): %s", r.Expr)
			continue
		}
		url := r.Annotations["runbook_url"]
		a, ok := strings.CutPrefix(url, runbookBase)
		if !ok {
			t.Errorf("%s: runbook_url %q, want %s<section>", r.Alert, url, runbookBase)
			continue
		}
		s, ok := secs[a]
		switch {
		case !ok:
			t.Errorf("%s: runbook_url points to #%s, which is no heading of docs/OPERATIONS.md", r.Alert, a)
		case !strings.Contains(s.body, "`"+r.Alert+"`"):
			t.Errorf("%s: its runbook section %q does not name it", r.Alert, s.title)
		}
		used[a] = true
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("%s: want a severity label and a summary", r.Alert)
		}
	}
	if len(used) < 2 {
		t.Fatalf("the alerts use %d runbook sections", len(used))
	}
}

// The jobs the rules and the dashboard may select: the services, as the
// ServiceMonitor names them, and kube-state-metrics.
var scrapeJobs = append(slices.Clone(services), observability.KubeStateMetrics)

var jobMatcher = regexp.MustCompile(`\bjob\s*(=~?)\s*"([^"]*)"`)

// TestSelectorsNameJobAndNamespace checks that every series the alert rules and the
// dashboard select is narrowed to its job and namespace: without them, a metric of the
// same name from another application in the cluster would mix in.
func TestSelectorsNameJobAndNamespace(t *testing.T) {
	t.Parallel()
	var exprs []string
	for _, r := range readAlerts(t).alerts() {
		exprs = append(exprs, r.Expr)
	}
	refs, err := observability.Refs()
	if err != nil {
		t.Fatal(err)
	}
	for _, where := range refs {
		for _, w := range where {
			if strings.HasPrefix(w, "dashboard.json: ") {
				exprs = append(exprs, strings.TrimPrefix(w, "dashboard.json: "))
			}
		}
	}
	slices.Sort(exprs)
	exprs = slices.Compact(exprs)
	for _, x := range exprs {
		for _, sel := range observability.Selectors(x) {
			labels := sel.Labels()
			if !slices.Contains(labels, "job") || !slices.Contains(labels, "namespace") {
				t.Errorf("%s selected without job and namespace in %s", sel.Name, x)
			}
		}
		// The values survive only in the raw expression: Selectors blanks them.
		for _, m := range jobMatcher.FindAllStringSubmatch(x, -1) {
			jobs := []string{m[2]}
			if m[1] == "=~" {
				jobs = strings.Split(m[2], "|")
			}
			for _, j := range jobs {
				if !slices.Contains(scrapeJobs, j) {
					t.Errorf("job %q is none of %v, in %s", j, scrapeJobs, x)
				}
			}
		}
	}
	observability.CheckKubeStateMetrics(t)
}

// TestPoolSeriesExist checks that every pgxpool_ series the rules and the dashboard
// reference is exported by shared/postgres's pool collector, which the API and the
// publisher register on their admin registries.
func TestPoolSeriesExist(t *testing.T) {
	t.Parallel()
	// The collector describes and reads the pool's counters without a connection, and
	// a pool connects only when asked for one.
	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/none")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	observability.CheckRegistered(t, "postgres", func(r prometheus.Registerer) {
		r.MustRegister(postgres.PoolCollector(pool, "test"))
	})
}

var updateRules = flag.Bool("update-rules", false, "rewrite the monitoring component's PrometheusRule from observability/alerts.yml")

// prometheusRuleFile holds the rules of observability/alerts.yml as a PrometheusRule.
var prometheusRuleFile = filepath.Join("k8s", "components", "monitoring", "prometheusrule.yaml")

const prometheusRuleHeader = `# Generated from deploy/observability/alerts.yml: edit that file, then regenerate this
# one (cd deploy && go test -run TestPrometheusRuleMatchesAlerts -update-rules) so
# that the two stay equal.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: outboxtodo
  namespace: outboxtodo
  labels:
    app.kubernetes.io/part-of: outboxtodo
spec:
`

// TestPrometheusRuleMatchesAlerts checks that the monitoring component's PrometheusRule
// holds exactly the rules of observability/alerts.yml, the file Prometheus setups
// without the operator load, so that both page alike.
func TestPrometheusRuleMatchesAlerts(t *testing.T) {
	t.Parallel()
	if *updateRules {
		b, err := os.ReadFile(filepath.Join(observabilityDir, "alerts.yml"))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for len(lines) > 0 && (lines[0] == "" || strings.HasPrefix(lines[0], "#")) {
			lines = lines[1:] // the file's own header
		}
		var out strings.Builder
		out.WriteString(prometheusRuleHeader)
		for _, l := range lines {
			if l != "" {
				out.WriteString("  ")
			}
			out.WriteString(l + "\n")
		}
		if err := os.WriteFile(prometheusRuleFile, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := decoder(t).Decode(b, nil, nil)
	if err != nil {
		t.Fatalf("decode %s strictly: %v", prometheusRuleFile, err)
	}
	pr, ok := obj.(*monitoringv1.PrometheusRule)
	if !ok {
		t.Fatalf("%s holds a %T", prometheusRuleFile, obj)
	}
	j, err := json.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var got ruleGroups
	if err := json.Unmarshal(j, &got); err != nil {
		t.Fatal(err)
	}
	if want := readAlerts(t); !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from observability/alerts.yml: regenerate it with\n\tcd deploy && go test -run TestPrometheusRuleMatchesAlerts -update-rules", prometheusRuleFile)
	}
}
