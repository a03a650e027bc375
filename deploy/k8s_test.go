package deploy

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/outboxtodo/outboxtodo/shared/admin"
)

var overlays = []string{"dev", "prod"}

// services are the Deployments, each running the program of the same name.
var services = []string{"api", "projector", "publisher"}

// secretVars hold credentials: they must come from a Secret, and every program that
// reads one must be given it.
var secretVars = map[string]bool{"DATABASE_URL": true, "NATS_URL": true, "MONGODB_URI": true, "CURSOR_SECRET": true}

// runtimeVars are read by the Go runtime rather than by our code.
var runtimeVars = map[string]bool{"GOMEMLIMIT": true}

// schemaUsers are the Deployments that must not start before the migration Job has
// brought the schema to their image's version.
var schemaUsers = []string{"api", "publisher"}

// The reachability each workload needs (see k8s/base/networkpolicy.yaml): egress by
// protocol/port, ingress by protocol/port name.
var (
	dns       = []string{"UDP/53", "TCP/53"}
	sql       = []string{"TCP/5432", "TCP/26257"}
	natsPort  = []string{"TCP/4222"}
	mongoPort = []string{"TCP/27017"}

	wantEgress = map[string][]string{
		"Deployment/api":                  concat(dns, sql, natsPort, mongoPort),
		"Deployment/publisher":            concat(dns, sql, natsPort),
		"Deployment/projector":            concat(dns, natsPort, mongoPort),
		"Job/migrate":                     concat(dns, sql),
		"CronJob/todoctl-verify":          concat(dns, natsPort, mongoPort, sql),
		"CronJob/todoctl-resync":          concat(dns, natsPort, mongoPort, sql),
		"CronJob/todoctl-restore-cutover": concat(dns, natsPort, mongoPort, sql),
		"CronJob/projector-rebuild":       concat(dns, natsPort, mongoPort),
		"Pod/nats-box":                    concat(dns, natsPort),
	}
	wantIngress = map[string][]string{
		"Deployment/api":       {"TCP/http", "TCP/admin"},
		"Deployment/publisher": {"TCP/admin"},
		"Deployment/projector": {"TCP/admin"},
	}
)

// operations are the operator tools as CronJobs (k8s/base/operations.yaml): the
// program and subcommand each runs, the name label of its pods (which its network
// policies select), and whether it runs on its schedule (else it is a suspended
// template for kubectl create job --from). The write side's tools are todoctl's, the
// read side's the projector's.
var operations = map[string]struct {
	program   string
	args      []string
	label     string
	scheduled bool
}{
	"todoctl-verify":          {"todoctl", []string{"verify"}, "todoctl", true},
	"todoctl-resync":          {"todoctl", []string{"resync", "--all"}, "todoctl", false},
	"todoctl-restore-cutover": {"todoctl", []string{"restore-cutover", "--yes"}, "todoctl", false},
	"projector-rebuild":       {"projector", []string{"rebuild"}, "projector-tools", false},
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.Sort(out)
	return out
}

func TestOverlays(t *testing.T) {
	progs := programs(t)
	rendered := map[string]*manifest{}
	for _, o := range overlays {
		rendered[o] = render(t, o, "monitoring").withDebugPods(t)
		if plain := render(t, o); len(plain.serviceMonitors)+len(plain.prometheusRules) > 0 {
			t.Errorf("%s: renders Prometheus Operator objects without the monitoring component", o)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, o := range overlays {
		m := rendered[o]
		t.Run(o, func(t *testing.T) {
			t.Parallel()
			t.Run("deployments", func(t *testing.T) { checkDeployments(t, m, progs) })
			t.Run("containers", func(t *testing.T) { checkContainers(t, m, progs) })
			t.Run("migration", func(t *testing.T) { checkMigration(t, m, progs) })
			t.Run("disruption budgets", func(t *testing.T) { checkPDBs(t, m) })
			t.Run("autoscalers", func(t *testing.T) { checkHPAs(t, m, progs) })
			t.Run("services", func(t *testing.T) { checkServices(t, m) })
			t.Run("network policies", func(t *testing.T) { checkPolicies(t, m) })
			t.Run("namespace", func(t *testing.T) { checkNamespace(t, m) })
			t.Run("operations", func(t *testing.T) { checkOperations(t, m, progs) })
			t.Run("monitoring", func(t *testing.T) { checkMonitoring(t, m) })
		})
	}
	t.Run("prod scales beyond dev", func(t *testing.T) {
		t.Parallel()
		dev, prod := rendered["dev"], rendered["prod"]
		for _, name := range services {
			if d, p := dev.minReplicas(name), prod.minReplicas(name); d != 1 || p <= d {
				t.Errorf("%s: at least %d pods in dev and %d in prod, want 1 and more", name, d, p)
			}
		}
		pub := progs["publisher"]
		for overlay, want := range map[string]string{"dev": "1", "prod": "3"} {
			m := rendered[overlay]
			if got := m.setting(t, m.deployments["publisher"].Spec.Template.Spec.Containers[0], pub, "STREAM_REPLICAS"); got != want {
				t.Errorf("%s: publisher STREAM_REPLICAS = %s, want %s", overlay, got, want)
			}
		}
	})
	// See docs/DEPLOYMENT.md: an acked event must survive a MongoDB failover.
	t.Run("read model written with majority, journaled", func(t *testing.T) {
		t.Parallel()
		proj := progs["projector"]
		for _, overlay := range overlays {
			m := rendered[overlay]
			c := m.deployments["projector"].Spec.Template.Spec.Containers[0]
			if w, j := m.setting(t, c, proj, "MONGODB_WRITE_CONCERN"), m.setting(t, c, proj, "MONGODB_WRITE_JOURNAL"); w != "majority" || j != "true" {
				t.Errorf("%s: projector MONGODB_WRITE_CONCERN=%s MONGODB_WRITE_JOURNAL=%s, want majority and true", overlay, w, j)
			}
		}
	})
	t.Run("prod pins one release", func(t *testing.T) {
		t.Parallel()
		tags := map[string][]string{}
		for _, w := range rendered["prod"].workloads() {
			if strings.HasPrefix(w.id, "Pod/") {
				continue // a debug pod, applied by hand: not part of the release
			}
			for _, c := range containers(w.pod) {
				tag := imageTag(c.Image)
				tags[tag] = append(tags[tag], w.id+"/"+c.Name)
			}
		}
		if len(tags) != 1 {
			t.Fatalf("prod images carry %d tags, want one release for all: %v", len(tags), tags)
		}
		for tag := range tags {
			if tag == "" || tag == "latest" || tag == "dev" {
				t.Errorf("prod image tag %q: want a pinned release", tag)
			}
		}
	})
}

// port returns the port number of a host:port listen address.
func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

func containerPort(c corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func checkProbe(t *testing.T, id, kind string, p *corev1.Probe, path string) {
	t.Helper()
	switch {
	case p == nil || p.HTTPGet == nil:
		t.Errorf("%s: no HTTP %s probe", id, kind)
	case p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("admin"):
		t.Errorf("%s: %s probe on %s port %s, want %s on the named port admin", id, kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	case p.TimeoutSeconds < 1 || p.PeriodSeconds <= p.TimeoutSeconds:
		t.Errorf("%s: %s probe timeout %ds, period %ds: want a timeout shorter than the period", id, kind, p.TimeoutSeconds, p.PeriodSeconds)
	}
}

func checkDeployments(t *testing.T, m *manifest, progs map[string]program) {
	if got := slices.Sorted(maps.Keys(m.deployments)); !slices.Equal(got, services) {
		t.Fatalf("Deployments %v, want %v", got, services)
	}
	for _, name := range services {
		d := m.deployments[name]
		pod := &d.Spec.Template
		id := "Deployment/" + name
		if len(pod.Spec.Containers) != 1 {
			t.Errorf("%s: %d containers, want 1", id, len(pod.Spec.Containers))
			continue
		}
		c := pod.Spec.Containers[0]
		prog, ok := progs[imageProgram(c.Image)]
		if !ok || prog.name != name {
			t.Errorf("%s: image %s, want the %s image", id, c.Image, name)
			continue
		}

		adminPort := port(t, m.setting(t, c, prog, "ADMIN_ADDR"))
		if got, ok := containerPort(c, "admin"); !ok || got != adminPort {
			t.Errorf("%s: port admin = %d, want %d (ADMIN_ADDR)", id, got, adminPort)
		}
		if name == "api" {
			httpPort := port(t, m.setting(t, c, prog, "API_ADDR"))
			if got, ok := containerPort(c, "http"); !ok || got != httpPort {
				t.Errorf("%s: port http = %d, want %d (API_ADDR)", id, got, httpPort)
			}
		}
		checkProbe(t, id, "liveness", c.LivenessProbe, admin.LivePath)
		checkProbe(t, id, "readiness", c.ReadinessProbe, admin.ReadyPath)

		want := map[string]string{
			"prometheus.io/scrape": "true",
			"prometheus.io/port":   strconv.Itoa(int(adminPort)),
			"prometheus.io/path":   admin.MetricsPath,
		}
		for k, v := range want {
			if got := pod.Annotations[k]; got != v {
				t.Errorf("%s: annotation %s = %q, want %q", id, k, got, v)
			}
		}

		shutdown, err := time.ParseDuration(m.setting(t, c, prog, "SHUTDOWN_TIMEOUT"))
		if err != nil {
			t.Errorf("%s: SHUTDOWN_TIMEOUT: %v", id, err)
			continue
		}
		var preStop time.Duration
		if l := c.Lifecycle; l != nil && l.PreStop != nil {
			if l.PreStop.Sleep == nil {
				t.Errorf("%s: preStop hook other than sleep: the image has no shell", id)
			} else {
				preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
			}
		}
		grace := 30 * time.Second // the API server's default
		if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if grace <= preStop+shutdown {
			t.Errorf("%s: termination grace %s, want more than preStop %s + SHUTDOWN_TIMEOUT %s", id, grace, preStop, shutdown)
		}
	}
}

func checkContainers(t *testing.T, m *manifest, progs map[string]program) {
	for _, cm := range m.configMaps {
		for k := range cm.Data {
			if secretVars[k] {
				t.Errorf("ConfigMap/%s holds the credential %s: put it in a Secret", cm.Name, k)
			}
		}
	}
	for _, w := range m.workloads() {
		spec := w.pod.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token it never uses", w.id)
		}
		for _, c := range containers(w.pod) {
			id := w.id + "/" + c.Name
			checkSecurity(t, id, spec.SecurityContext, c.SecurityContext)
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[r]
				lim, hasLim := c.Resources.Limits[r]
				if !hasReq || !hasLim || req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %v, limit %v: want both, request <= limit", id, r, req.String(), lim.String())
				}
			}
			if strings.HasPrefix(w.id, "Pod/") {
				continue // a debug pod runs a public image, not one of our programs
			}

			prog, ok := progs[containerProgram(c)]
			if !ok {
				t.Errorf("%s: image %s, command %v runs none of %v", id, c.Image, c.Command, slices.Sorted(maps.Keys(progs)))
				continue
			}
			env, err := m.env(c)
			if err != nil {
				t.Errorf("%s: %v", id, err)
				continue
			}
			for _, name := range slices.Sorted(maps.Keys(env)) {
				v := env[name]
				switch {
				case runtimeVars[name]:
				case !prog.reads[name]:
					t.Errorf("%s: sets %s, which %s does not read", id, name, prog.name)
				case secretVars[name] && v.source != "secret":
					t.Errorf("%s: %s comes from a %s, want a Secret", id, name, v.source)
				case v.source == "secret" && !secretVars[name]:
					t.Errorf("%s: %s comes from a Secret but is no credential: put it in the ConfigMap", id, name)
				}
			}
			for name := range secretVars {
				if _, set := env[name]; prog.reads[name] && !set {
					t.Errorf("%s: %s reads %s, which is not set (its default points at localhost)", id, prog.name, name)
				}
			}
		}
	}
}

func checkSecurity(t *testing.T, id string, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	if c == nil {
		c = &corev1.SecurityContext{}
	}
	is := func(b *bool) bool { return b != nil && *b }
	isNot := func(b *bool) bool { return b != nil && !*b }

	runAsNonRoot := is(c.RunAsNonRoot) || (c.RunAsNonRoot == nil && is(pod.RunAsNonRoot))
	user := c.RunAsUser
	if user == nil {
		user = pod.RunAsUser
	}
	seccomp := c.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	switch {
	case !runAsNonRoot || (user != nil && *user == 0):
		t.Errorf("%s: may run as root", id)
	case !is(c.ReadOnlyRootFilesystem):
		t.Errorf("%s: root filesystem is writable", id)
	case !isNot(c.AllowPrivilegeEscalation) || is(c.Privileged):
		t.Errorf("%s: may escalate privileges", id)
	case c.Capabilities == nil || !slices.Equal(c.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(c.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities %+v, want drop ALL and add none", id, c.Capabilities)
	case seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: seccomp profile %+v, want RuntimeDefault", id, seccomp)
	}
}

func checkMigration(t *testing.T, m *manifest, progs map[string]program) {
	job, ok := m.jobs["migrate"]
	if !ok {
		t.Fatal("no migration Job named migrate")
	}
	spec := job.Spec
	if spec.Parallelism == nil || *spec.Parallelism != 1 || spec.Completions == nil || *spec.Completions != 1 {
		t.Error("migration Job: want parallelism 1 and completions 1: migrations run without a lock")
	}
	if spec.PodReplacementPolicy == nil || *spec.PodReplacementPolicy != "Failed" {
		t.Error("migration Job: want podReplacementPolicy Failed, so a retry never overlaps a terminating migrator")
	}
	if spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("migration Job: restartPolicy %s, want Never (the Job controller retries)", spec.Template.Spec.RestartPolicy)
	}
	if len(spec.Template.Spec.Containers) != 1 {
		t.Fatalf("migration Job: %d containers, want 1", len(spec.Template.Spec.Containers))
	}
	migrator := spec.Template.Spec.Containers[0]
	migrate := progs["migrate"]
	checkCommand := func(id string, c corev1.Container, want string) {
		t.Helper()
		switch {
		case imageProgram(c.Image) != "migrate":
			t.Errorf("%s: image %s, want the migrate image", id, c.Image)
		case len(c.Command) > 0 || !slices.Equal(c.Args, []string{want}):
			t.Errorf("%s: command %v args %v, want args [%s]", id, c.Command, c.Args, want)
		case !migrate.commands[want]:
			t.Errorf("%s: migrate has no %q command", id, want)
		}
	}
	checkCommand("Job/migrate", migrator, "up")

	for _, name := range schemaUsers {
		d := m.deployments[name]
		if d == nil {
			t.Errorf("no Deployment %s", name)
			continue
		}
		id := "Deployment/" + name
		inits := d.Spec.Template.Spec.InitContainers
		if len(inits) != 1 {
			t.Errorf("%s: %d init containers, want one that waits for the schema", id, len(inits))
			continue
		}
		checkCommand(id+"/"+inits[0].Name, inits[0], "wait")
		// The image that waits knows the same latest version as the one that migrates.
		if inits[0].Image != migrator.Image {
			t.Errorf("%s: waits with image %s, migrates with %s", id, inits[0].Image, migrator.Image)
		}
	}
}

func checkPDBs(t *testing.T, m *manifest) {
	covered := map[string]bool{}
	for _, p := range m.pdbs {
		id := "PodDisruptionBudget/" + p.Name
		sel := m.selected(t, p.Spec.Selector)
		if len(sel) != 1 || m.deployments[p.Name] == nil || sel[0].id != "Deployment/"+p.Name {
			t.Errorf("%s selects %v, want Deployment/%s alone", id, sel, p.Name)
			continue
		}
		covered[p.Name] = true
		minPods := m.minReplicas(p.Name)
		switch {
		case (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil):
			t.Errorf("%s: want exactly one of minAvailable and maxUnavailable", id)
		case p.Spec.MinAvailable != nil && (p.Spec.MinAvailable.Type != intstr.Int || p.Spec.MinAvailable.IntVal >= minPods):
			t.Errorf("%s: minAvailable %s with at least %d pods would block every drain", id, p.Spec.MinAvailable.String(), minPods)
		case p.Spec.MaxUnavailable != nil && (p.Spec.MaxUnavailable.Type != intstr.Int || p.Spec.MaxUnavailable.IntVal < 1):
			t.Errorf("%s: maxUnavailable %s: want a count of at least 1", id, p.Spec.MaxUnavailable.String())
		case m.overlay == "prod" && p.Spec.MinAvailable == nil:
			t.Errorf("%s: prod wants minAvailable", id)
		case minPods >= 2 && p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable.IntVal >= minPods:
			t.Errorf("%s: maxUnavailable %d lets a drain evict all %d pods", id, p.Spec.MaxUnavailable.IntVal, minPods)
		case minPods >= 2 && p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntVal < 1:
			t.Errorf("%s: minAvailable %d lets a drain evict every pod", id, p.Spec.MinAvailable.IntVal)
		}
	}
	for _, name := range services {
		if !covered[name] {
			t.Errorf("Deployment/%s has no PodDisruptionBudget", name)
		}
	}
}

func checkHPAs(t *testing.T, m *manifest, progs map[string]program) {
	scaled := map[string]bool{}
	for _, h := range m.hpas {
		id := "HorizontalPodAutoscaler/" + h.Name
		ref := h.Spec.ScaleTargetRef
		d, ok := m.deployments[ref.Name]
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || !ok {
			t.Errorf("%s targets %s %s/%s, which is not a rendered Deployment", id, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		scaled[ref.Name] = true
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas || len(h.Spec.Metrics) == 0 {
			t.Errorf("%s: want 1 <= minReplicas <= maxReplicas and a metric", id)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("%s: Deployment/%s sets replicas, which every apply would reset under the autoscaler", id, ref.Name)
		}
		for _, metric := range h.Spec.Metrics {
			if metric.Resource == nil {
				continue
			}
			// Utilization is relative to the request, so the request must exist.
			for _, c := range d.Spec.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[metric.Resource.Name]; !ok {
					t.Errorf("%s: scales on %s, which %s/%s does not request", id, metric.Resource.Name, ref.Name, c.Name)
				}
			}
		}
	}
	for _, name := range []string{"api", "projector"} {
		if !scaled[name] {
			t.Errorf("Deployment/%s has no HorizontalPodAutoscaler", name)
		}
	}
	// Projector replicas share the stream's partitions, one replica per partition: a
	// replica past the partition count would only stand by.
	pub := m.deployments["publisher"].Spec.Template.Spec.Containers[0]
	partitions, err := strconv.Atoi(m.setting(t, pub, progs["publisher"], "STREAM_PARTITIONS"))
	if err != nil {
		t.Fatalf("publisher STREAM_PARTITIONS: %v", err)
	}
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Name == "projector" && h.Spec.MaxReplicas > int32(partitions) {
			t.Errorf("HorizontalPodAutoscaler/%s: maxReplicas %d above the stream's %d partitions", h.Name, h.Spec.MaxReplicas, partitions)
		}
	}
	if min := m.minReplicas("projector"); m.overlay == "prod" && min < 2 {
		t.Errorf("prod runs at least %d projector replicas, want 2: one alone stops projection while it restarts", min)
	}
}

func checkServices(t *testing.T, m *manifest) {
	for _, name := range []string{"postgres", "nats", "mongodb"} {
		s, ok := m.services[name]
		if !ok || s.Spec.Type != corev1.ServiceTypeExternalName || s.Spec.ExternalName == "" {
			t.Errorf("no ExternalName Service %s for the external %s", name, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.services)) {
		s := m.services[name]
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		id := "Service/" + name
		sel := m.selected(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(s.Spec.Selector) == 0 || len(sel) != 1 {
			t.Errorf("%s selects %v, want one workload", id, sel)
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				t.Errorf("%s: port %s targets a number: name the container port", id, p.Name)
				continue
			}
			if _, ok := containerPort(sel[0].pod.Spec.Containers[0], p.TargetPort.StrVal); !ok {
				t.Errorf("%s: port %s targets %s, which %s does not declare", id, p.Name, p.TargetPort.StrVal, sel[0].id)
			}
		}
	}
}

func checkPolicies(t *testing.T, m *manifest) {
	defaultDeny := false
	for _, p := range m.policies {
		id := "NetworkPolicy/" + p.Name
		if len(m.selected(t, &p.Spec.PodSelector)) == 0 {
			t.Errorf("%s selects no pod", id)
		}
		if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			len(p.Spec.Ingress)+len(p.Spec.Egress) == 0 && len(p.Spec.PolicyTypes) == 2 {
			defaultDeny = true
		}
	}
	if !defaultDeny {
		t.Fatal("no default-deny NetworkPolicy: the others would only add to an open network")
	}

	for _, w := range m.workloads() {
		var egress, ingress []string
		for _, p := range m.policies {
			if !slices.ContainsFunc(m.selected(t, &p.Spec.PodSelector), func(s workload) bool { return s.id == w.id }) {
				continue
			}
			id := "NetworkPolicy/" + p.Name
			for _, typ := range p.Spec.PolicyTypes {
				switch typ {
				case networkingv1.PolicyTypeEgress:
					for _, r := range p.Spec.Egress {
						egress = append(egress, rulePorts(t, id, w, len(r.To), r.Ports)...)
					}
				case networkingv1.PolicyTypeIngress:
					for _, r := range p.Spec.Ingress {
						ingress = append(ingress, rulePorts(t, id, w, len(r.From), r.Ports)...)
					}
				}
			}
		}
		slices.Sort(egress)
		slices.Sort(ingress)
		egress, ingress = slices.Compact(egress), slices.Compact(ingress)
		if want := wantEgress[w.id]; !slices.Equal(egress, want) {
			t.Errorf("%s may reach %v, want %v", w.id, egress, want)
		}
		want := slices.Clone(wantIngress[w.id])
		slices.Sort(want)
		if !slices.Equal(ingress, want) {
			t.Errorf("%s is reachable on %v, want %v", w.id, ingress, want)
		}
	}
}

// rulePorts lists a rule's ports as protocol/port, failing rules that leave peers or
// ports open and named ports that w does not declare.
func rulePorts(t *testing.T, id string, w workload, peers int, ports []networkingv1.NetworkPolicyPort) []string {
	t.Helper()
	if peers == 0 || len(ports) == 0 {
		t.Errorf("%s: a rule without peers or ports allows everything", id)
		return nil
	}
	var out []string
	for _, p := range ports {
		if p.Port == nil || p.Protocol == nil {
			t.Errorf("%s: a port without number or protocol", id)
			continue
		}
		if p.Port.Type == intstr.String && !slices.ContainsFunc(w.pod.Spec.Containers, func(c corev1.Container) bool {
			_, ok := containerPort(c, p.Port.StrVal)
			return ok
		}) {
			t.Errorf("%s: port %s is not declared by %s", id, p.Port.StrVal, w.id)
		}
		out = append(out, fmt.Sprintf("%s/%s", *p.Protocol, p.Port.String()))
	}
	return out
}

func checkNamespace(t *testing.T, m *manifest) {
	if len(m.namespaces) != 1 || m.namespaces[0].Name != "outboxtodo" {
		t.Fatalf("namespaces %v, want outboxtodo alone", m.namespaces)
	}
	if got := m.namespaces[0].Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace enforces pod security %q, want restricted", got)
	}
}

// checkOperations checks the operator tools: each CronJob runs one of its program's
// commands in a pod of its own (the container checks cover its resources and
// environment); verify runs on a schedule and keeps its failed Job for the alert, the
// others are suspended templates.
func checkOperations(t *testing.T, m *manifest, progs map[string]program) {
	if got, want := slices.Sorted(maps.Keys(m.cronJobs)), slices.Sorted(maps.Keys(operations)); !slices.Equal(got, want) {
		t.Errorf("CronJobs %v, want %v", got, want)
	}
	for name, op := range operations {
		cj, ok := m.cronJobs[name]
		if !ok {
			continue
		}
		id := "CronJob/" + name
		spec := cj.Spec
		job := spec.JobTemplate.Spec
		pod := job.Template.Spec
		suspended := spec.Suspend != nil && *spec.Suspend
		switch {
		case suspended == op.scheduled:
			t.Errorf("%s: suspend %v, want %v", id, suspended, !op.scheduled)
		case spec.ConcurrencyPolicy != batchv1.ForbidConcurrent:
			t.Errorf("%s: concurrencyPolicy %q, want Forbid: two runs at once would compete", id, spec.ConcurrencyPolicy)
		case job.BackoffLimit == nil || job.ActiveDeadlineSeconds == nil:
			t.Errorf("%s: want a backoffLimit and an activeDeadlineSeconds", id)
		case pod.RestartPolicy != corev1.RestartPolicyNever:
			t.Errorf("%s: restartPolicy %s, want Never (the Job controller retries)", id, pod.RestartPolicy)
		case len(pod.Containers) != 1:
			t.Errorf("%s: %d containers, want 1", id, len(pod.Containers))
		}
		if op.scheduled && (spec.FailedJobsHistoryLimit == nil || *spec.FailedJobsHistoryLimit < 1) {
			t.Errorf("%s: keeps no failed Job, so ReadModelVerifyFailed could never fire", id)
		}
		if len(pod.Containers) != 1 {
			continue
		}
		c := pod.Containers[0]
		switch {
		case containerProgram(c) != op.program:
			t.Errorf("%s: image %s, command %v runs %s, want %s", id, c.Image, c.Command, containerProgram(c), op.program)
		case !slices.Equal(c.Args, op.args):
			t.Errorf("%s: args %v, want %v", id, c.Args, op.args)
		case !progs[op.program].commands[op.args[0]]:
			t.Errorf("%s: %s has no %q command", id, op.program, op.args[0])
		}
		for _, labels := range []map[string]string{cj.Labels, job.Template.Labels} {
			if labels["app.kubernetes.io/name"] != op.label {
				t.Errorf("%s: labels %v, want app.kubernetes.io/name %s (its network policies)", id, labels, op.label)
			}
		}
		// Its own pod, not the live replicas': no Deployment, Service, PDB or
		// autoscaler may select it.
		for _, d := range m.deployments {
			if d.Spec.Template.Labels["app.kubernetes.io/name"] == job.Template.Labels["app.kubernetes.io/name"] {
				t.Errorf("%s: its pods carry the %s Deployment's name label", id, d.Name)
			}
		}
	}
	// The verify alerts read this CronJob's Jobs by name.
	b, err := os.ReadFile(filepath.Join(observabilityDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`cronjob="todoctl-verify"`, `job_name=~"todoctl-verify-.+"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("alerts.yml does not select %s, the scheduled verify", want)
		}
	}
}

// checkMonitoring checks the monitoring component: its ServiceMonitor scrapes the admin
// port of every service under the job names the rules select, and it holds the
// PrometheusRule (whose rules TestPrometheusRuleMatchesAlerts compares).
func checkMonitoring(t *testing.T, m *manifest) {
	sm, ok := m.serviceMonitors["outboxtodo"]
	if !ok || len(m.serviceMonitors) != 1 {
		t.Fatalf("ServiceMonitors %v, want outboxtodo alone", slices.Sorted(maps.Keys(m.serviceMonitors)))
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	for _, name := range slices.Sorted(maps.Keys(m.services)) {
		s := m.services[name]
		if !sel.Matches(labels.Set(s.Labels)) {
			continue
		}
		jobs = append(jobs, s.Labels[sm.Spec.JobLabel])
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				t.Errorf("ServiceMonitor/%s: Service %s has no port %q", sm.Name, name, e.Port)
			}
		}
	}
	slices.Sort(jobs)
	if !slices.Equal(jobs, services) {
		t.Errorf("ServiceMonitor/%s scrapes jobs %v, want %v (the jobs the rules select)", sm.Name, jobs, services)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != admin.MetricsPath {
		t.Errorf("ServiceMonitor/%s: endpoints %+v, want port admin, path %s", sm.Name, sm.Spec.Endpoints, admin.MetricsPath)
	}

	if _, ok := m.prometheusRules["outboxtodo"]; !ok || len(m.prometheusRules) != 1 {
		t.Errorf("PrometheusRules %v, want outboxtodo alone", slices.Sorted(maps.Keys(m.prometheusRules)))
	}
}
