// Package observability holds the Grafana dashboard (dashboard.json) and the
// Prometheus alert rules (alerts.yml) of outboxtodo, embedded, and checks that they
// reference only metrics the services export. Each service's tests build its real
// registry through a Recorder and call Check with the names it recorded; this package
// finds the names the PromQL expressions reference and which service owns each. Tests
// only: no service binary imports it.
package observability

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/outboxtodo/outboxtodo/shared/admin"
)

// files are the dashboards (*.json) and the Prometheus rule files (*.yml) whose
// expressions Refs reads.
//
//go:embed *.json *.yml
var files embed.FS

// owners maps a metric name prefix to the service that exports it. A referenced
// metric that matches none is an error in every service's check. The pgxpool_ series
// come from shared/postgres's pool collector, which the API and the publisher register
// (checked by the deploy module's tests); the kube_ series from kube-state-metrics
// (checked by CheckKubeStateMetrics).
var owners = map[string]string{"http_": "api", "publisher_": "publisher", "projector_": "projector",
	"pgxpool_": "postgres", "kube_": KubeStateMetrics}

// KubeStateMetrics owns the kube_ series: Kubernetes objects' state, from
// kube-state-metrics, which no registry of ours holds.
const KubeStateMetrics = "kube-state-metrics"

// kubeStateMetrics are the kube-state-metrics series the rules may reference, as its
// documentation lists them (docs/metrics/workload/job-metrics.md and
// cronjob-metrics.md, all STABLE since v2.0 but the last successful time, since v2.7).
var kubeStateMetrics = map[string]bool{
	"kube_job_failed":                          true,
	"kube_job_status_failed":                   true,
	"kube_job_owner":                           true,
	"kube_cronjob_created":                     true,
	"kube_cronjob_status_last_schedule_time":   true,
	"kube_cronjob_status_last_successful_time": true,
}

// builtins are series Prometheus makes itself; no service exports them.
var builtins = map[string]bool{"up": true, "scrape_duration_seconds": true}

// Owner is the service that exports metric name, or "" when no service does.
func Owner(name string) string {
	for prefix, svc := range owners {
		if strings.HasPrefix(name, prefix) {
			return svc
		}
	}
	return ""
}

// Refs returns every metric name referenced by the dashboards and the rule files,
// each with where it is referenced ("<file>: <expression>").
func Refs() (map[string][]string, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	refs := map[string][]string{}
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		var v any
		if path.Ext(e.Name()) == ".json" {
			err = json.Unmarshal(b, &v)
		} else {
			err = yaml.Unmarshal(b, &v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		exprs := collect(v, "expr")
		if len(exprs) == 0 {
			return nil, fmt.Errorf("%s: no expr fields found", e.Name())
		}
		for _, x := range exprs {
			names := Names(x)
			if len(names) == 0 {
				return nil, fmt.Errorf("%s: no metric in %q", e.Name(), x)
			}
			for _, n := range names {
				refs[n] = append(refs[n], e.Name()+": "+x)
			}
		}
	}
	return refs, nil
}

// collect returns the string values of every field named key, at any depth.
func collect(v any, key string) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			if s, ok := c.(string); ok && k == key {
				out = append(out, s)
				continue
			}
			out = append(out, collect(c, key)...)
		}
	case []any:
		for _, c := range v {
			out = append(out, collect(c, key)...)
		}
	}
	return out
}

var (
	strLit      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	braces      = regexp.MustCompile(`\{[^}]*\}`)
	brackets    = regexp.MustCompile(`\[[^\]]*\]`)
	numbers     = regexp.MustCompile(`\b[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?`)
	labelLists  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identifier  = regexp.MustCompile(`\$?[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeyword = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
)

// Names returns the metric names a PromQL expression selects: identifiers that are not
// functions, keywords, label names, durations or Grafana variables.
func Names(expr string) []string {
	s := strLit.ReplaceAllString(expr, `""`)
	s = braces.ReplaceAllString(s, " ")
	s = brackets.ReplaceAllString(s, " ")
	s = labelLists.ReplaceAllString(s, " ")
	s = numbers.ReplaceAllString(s, " ")
	var out []string
	for _, m := range identifier.FindAllStringSubmatch(s, -1) {
		tok := m[0]
		if m[1] != "" || strings.HasPrefix(tok, "$") || promKeyword[strings.ToLower(tok)] {
			continue // a function call, a Grafana variable, a keyword
		}
		if !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}

// Selector is one vector selector of a PromQL expression: the metric name and what its
// braces hold, with every string value blanked to "" (empty when it has no braces).
type Selector struct{ Name, Matchers string }

var selectorToken = regexp.MustCompile(`\{[^}]*\}|\$?[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)

// Selectors returns the vector selectors of a PromQL expression, in order.
func Selectors(expr string) []Selector {
	s := strLit.ReplaceAllString(expr, `""`)
	s = brackets.ReplaceAllString(s, " ")
	s = labelLists.ReplaceAllString(s, " ")
	s = numbers.ReplaceAllString(s, " ")
	var out []Selector
	prevEnd := -1 // end of the last metric name, while only spaces follow it
	for _, loc := range selectorToken.FindAllStringSubmatchIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if strings.HasPrefix(tok, "{") {
			if prevEnd >= 0 && strings.TrimSpace(s[prevEnd:loc[0]]) == "" {
				out[len(out)-1].Matchers = tok[1 : len(tok)-1]
			}
			prevEnd = -1
			continue
		}
		prevEnd = -1
		if loc[2] >= 0 || strings.HasPrefix(tok, "$") || promKeyword[strings.ToLower(tok)] {
			continue
		}
		out = append(out, Selector{Name: tok})
		prevEnd = loc[1]
	}
	return out
}

var labelMatcher = regexp.MustCompile(`(?:^|[\s,])([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!=|!~|=)`)

// Labels are the label names a selector's matchers name.
func (s Selector) Labels() []string {
	var out []string
	for _, m := range labelMatcher.FindAllStringSubmatch(s.Matchers, -1) {
		out = append(out, m[1])
	}
	return out
}

// Recorder is a Registerer that forwards to another and keeps the name of every metric
// each registered collector describes: label vectors export nothing until a label set
// is used, but they describe themselves from the start.
type Recorder struct {
	prometheus.Registerer
	mu    sync.Mutex
	names map[string]bool
}

// NewRecorder records what is registered on reg.
func NewRecorder(reg prometheus.Registerer) *Recorder {
	return &Recorder{Registerer: reg, names: map[string]bool{}}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Register records c's metric names, then registers it.
func (r *Recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			r.names[m[1]] = true
		}
	}
	return r.Registerer.Register(c)
}

// MustRegister registers cs, panicking on error as prometheus.Registerer requires.
func (r *Recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Names are the recorded metric names, with the series names of gathered metrics
// from g (nil for none) added.
func (r *Recorder) Names(g prometheus.Gatherer) (map[string]bool, error) {
	r.mu.Lock()
	out := make(map[string]bool, len(r.names))
	for n := range r.names {
		out[n] = true
	}
	r.mu.Unlock()
	if g == nil {
		return out, nil
	}
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out, nil
}

// exported reports whether name is a series of one of the exported metrics: the name
// itself, or a histogram's or summary's _bucket, _sum or _count.
func exported(name string, names map[string]bool) bool {
	if names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && names[base] {
			return true
		}
	}
	return false
}

// CheckKubeStateMetrics fails t for every kube_ series referenced that
// kube-state-metrics does not export (a typo would leave its rule silent forever).
func CheckKubeStateMetrics(t testing.TB) {
	t.Helper()
	refs, err := Refs()
	if err != nil {
		t.Fatal(err)
	}
	for name, where := range refs {
		if Owner(name) == KubeStateMetrics && !kubeStateMetrics[name] {
			t.Errorf("%s is not a kube-state-metrics series (in %s)", name, where[0])
		}
	}
}

// Check fails t for every metric referenced that service owns but does not export
// (names), and for every referenced metric no service owns.
func Check(t testing.TB, service string, names map[string]bool) {
	t.Helper()
	refs, err := Refs()
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	owned := 0
	for name, where := range refs {
		switch owner := Owner(name); {
		case builtins[name]:
		case owner == "":
			errs = append(errs, fmt.Errorf("%s is exported by no service (in %s)", name, where[0]))
		case owner == service:
			owned++
			if !exported(name, names) {
				errs = append(errs, fmt.Errorf("%s is not exported by the %s (in %s)", name, service, where[0]))
			}
		}
	}
	if owned == 0 {
		errs = append(errs, fmt.Errorf("no metric of the %s is referenced", service))
	}
	for _, err := range errs {
		t.Error(err)
	}
}

// CheckRegistered runs Check on the names that register registers on a registry like
// the one service's admin server exposes (shared/admin.NewRegistry).
func CheckRegistered(t testing.TB, service string, register func(prometheus.Registerer)) {
	t.Helper()
	reg := admin.NewRegistry()
	rec := NewRecorder(reg)
	register(rec)
	names, err := rec.Names(reg)
	if err != nil {
		t.Fatal(err)
	}
	Check(t, service, names)
}
