package observability_test

import (
	"slices"
	"testing"

	"github.com/outboxtodo/outboxtodo/deploy/observability"
)

func TestNames(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`max(publisher_outbox_backlog) > 10000 and deriv(max(publisher_outbox_backlog)[10m:1m]) > 0`:                                                 {"publisher_outbox_backlog"},
		`histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!="unmatched", x=~"a(b)"}[$__rate_interval])))`: {"http_request_duration_seconds_bucket"},
		`sum(rate(http_requests_total{status=~"5.."}[5m])) / clamp_min(sum(rate(http_requests_total[5m])), 1e-9)`:                                    {"http_requests_total"},
		`sum without (instance) (projector_events_total) unless on (job) up`:                                                                         {"projector_events_total", "up"},
	} {
		if got := observability.Names(expr); !slices.Equal(got, want) {
			t.Errorf("Names(%s) = %v, want %v", expr, got, want)
		}
	}
}

func TestOwner(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{"http_requests_total": "api", "publisher_outbox_backlog": "publisher",
		"projector_lag_seconds_bucket": "projector", "go_goroutines": ""} {
		if got := observability.Owner(name); got != want {
			t.Errorf("Owner(%s) = %q, want %q", name, got, want)
		}
	}
}

func TestSelectors(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]observability.Selector{
		`max(publisher_outbox_backlog{job="publisher", namespace="outboxtodo"}) > 10000`: {{Name: "publisher_outbox_backlog", Matchers: `job="", namespace=""`}},
		`sum by (le) (rate(projector_lag_seconds_bucket {job="projector"}[5m])) / up`:    {{Name: "projector_lag_seconds_bucket", Matchers: `job=""`}, {Name: "up"}},
		`label_replace(absent(x{a="}", b=~"{"}), "metric", "x", "", "") unless on () absent(up{job="p"} == 1)`: {
			{Name: "x", Matchers: `a="", b=~""`}, {Name: "up", Matchers: `job=""`}},
		`time() - max(kube_cronjob_created{cronjob="v"}) > 26 * 3600`: {{Name: "kube_cronjob_created", Matchers: `cronjob=""`}},
	} {
		if got := observability.Selectors(expr); !slices.Equal(got, want) {
			t.Errorf("Selectors(%s) = %q, want %q", expr, got, want)
		}
	}
	if got, want := (observability.Selector{Matchers: `job="", namespace=~"", job_name!~"", status!=""`}).Labels(), []string{"job", "namespace", "job_name", "status"}; !slices.Equal(got, want) {
		t.Errorf("Labels() = %v, want %v", got, want)
	}
}
