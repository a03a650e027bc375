package deploy

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// manifest is one rendered overlay, every object decoded into its API type.
type manifest struct {
	overlay     string
	namespaces  []*corev1.Namespace
	deployments map[string]*appsv1.Deployment
	jobs        map[string]*batchv1.Job
	cronJobs    map[string]*batchv1.CronJob
	pods        map[string]*corev1.Pod // applied by hand (k8s/debug), added by withDebugPods
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	policies    []*networkingv1.NetworkPolicy

	serviceMonitors map[string]*monitoringv1.ServiceMonitor
	prometheusRules map[string]*monitoringv1.PrometheusRule
}

// decoder decodes YAML into the API types of every kind the manifests may use, and
// fails on unknown or duplicated fields and on any other kind.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// render builds k8s/overlays/<overlay> with kustomize, with the optional components of
// k8s/components named, as `kubectl kustomize` would, and decodes every object
// strictly.
func render(t *testing.T, overlay string, components ...string) *manifest {
	t.Helper()
	fsys, dir := filesys.MakeFsOnDisk(), filepath.Join("k8s", "overlays", overlay)
	if len(components) > 0 {
		// An overlay of the overlay that adds the components, as an operator writes it,
		// in a copy of the tree in memory.
		fsys, dir = memCopy(t, "k8s"), "/k8s/overlays/"+overlay+"-with-components"
		kust := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../" + overlay + "]\ncomponents:\n"
		for _, c := range components {
			kust += "  - ../../components/" + c + "\n"
		}
		if err := fsys.WriteFile(dir+"/kustomization.yaml", []byte(kust)); err != nil {
			t.Fatal(err)
		}
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	if err != nil {
		t.Fatalf("render %s %v: %v", overlay, components, err)
	}
	m := &manifest{
		overlay:         overlay,
		deployments:     map[string]*appsv1.Deployment{},
		jobs:            map[string]*batchv1.Job{},
		cronJobs:        map[string]*batchv1.CronJob{},
		pods:            map[string]*corev1.Pod{},
		services:        map[string]*corev1.Service{},
		configMaps:      map[string]*corev1.ConfigMap{},
		secrets:         map[string]*corev1.Secret{},
		serviceMonitors: map[string]*monitoringv1.ServiceMonitor{},
		prometheusRules: map[string]*monitoringv1.PrometheusRule{},
	}
	dec := decoder(t)
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", overlay, r.CurId(), err)
		}
		obj, _, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: decode %s strictly: %v", overlay, r.CurId(), err)
			continue
		}
		if ns := obj.(metav1.Object).GetNamespace(); ns != "outboxtodo" && r.GetKind() != "Namespace" {
			t.Errorf("%s: %s is in namespace %q, want outboxtodo", overlay, r.CurId(), ns)
		}
		switch o := obj.(type) {
		case *corev1.Namespace:
			m.namespaces = append(m.namespaces, o)
		case *appsv1.Deployment:
			m.deployments[o.Name] = o
		case *batchv1.Job:
			m.jobs[o.Name] = o
		case *batchv1.CronJob:
			m.cronJobs[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *corev1.Secret:
			m.secrets[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas = append(m.hpas, o)
		case *networkingv1.NetworkPolicy:
			m.policies = append(m.policies, o)
		case *monitoringv1.ServiceMonitor:
			m.serviceMonitors[o.Name] = o
		case *monitoringv1.PrometheusRule:
			m.prometheusRules[o.Name] = o
		default:
			t.Errorf("%s: %s: no check covers kind %T", overlay, r.CurId(), obj)
		}
	}
	return m
}

// memCopy copies the directory tree root into a file system in memory, under /root.
func memCopy(t *testing.T, root string) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+filepath.ToSlash(p), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// withDebugPods adds the pods of k8s/debug, which operators apply by hand next to an
// overlay, decoded strictly.
func (m *manifest) withDebugPods(t *testing.T) *manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "debug", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no debug pods in k8s/debug: %v", err)
	}
	dec := decoder(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Fatalf("decode %s strictly: %v", f, err)
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Namespace != "outboxtodo" {
			t.Fatalf("%s: want one Pod in namespace outboxtodo, got %T", f, obj)
		}
		m.pods[pod.Name] = pod
	}
	return m
}

// workload is a pod template with the object that owns it.
type workload struct {
	id  string // Kind/name
	pod *corev1.PodTemplateSpec
}

func (m *manifest) workloads() []workload {
	var ws []workload
	for _, name := range slices.Sorted(maps.Keys(m.deployments)) {
		ws = append(ws, workload{"Deployment/" + name, &m.deployments[name].Spec.Template})
	}
	for _, name := range slices.Sorted(maps.Keys(m.jobs)) {
		ws = append(ws, workload{"Job/" + name, &m.jobs[name].Spec.Template})
	}
	for _, name := range slices.Sorted(maps.Keys(m.cronJobs)) {
		ws = append(ws, workload{"CronJob/" + name, &m.cronJobs[name].Spec.JobTemplate.Spec.Template})
	}
	for _, name := range slices.Sorted(maps.Keys(m.pods)) {
		p := m.pods[name]
		ws = append(ws, workload{"Pod/" + name, &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}})
	}
	return ws
}

// selected returns the workloads whose pod labels sel matches.
func (m *manifest) selected(t *testing.T, sel *metav1.LabelSelector) []workload {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	var out []workload
	for _, w := range m.workloads() {
		if s.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

// minReplicas is the fewest pods a Deployment runs: its autoscaler's minimum, or its
// replicas (1 when unset, as the API server defaults it).
func (m *manifest) minReplicas(deployment string) int32 {
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == deployment && h.Spec.MinReplicas != nil {
			return *h.Spec.MinReplicas
		}
	}
	if r := m.deployments[deployment].Spec.Replicas; r != nil {
		return *r
	}
	return 1
}

// envVar is one variable a container gets, with where its value comes from.
type envVar struct {
	value  string // literal, ConfigMap or Secret value; empty for downward-API values
	source string // "literal", "configmap", "secret" or "runtime"
}

// env resolves a container's environment as the kubelet would: envFrom first, then
// env entries, which override it. References to missing objects or keys are errors.
func (m *manifest) env(c corev1.Container) (map[string]envVar, error) {
	out := map[string]envVar{}
	for _, from := range c.EnvFrom {
		var kind, name string
		switch {
		case from.ConfigMapRef != nil:
			kind, name = "ConfigMap", from.ConfigMapRef.Name
		case from.SecretRef != nil:
			kind, name = "Secret", from.SecretRef.Name
		default:
			return nil, fmt.Errorf("envFrom entry without a source")
		}
		data, err := m.data(kind, name)
		if err != nil {
			return nil, fmt.Errorf("envFrom %w", err)
		}
		for k, v := range data {
			out[from.Prefix+k] = envVar{v, strings.ToLower(kind)}
		}
	}
	for _, e := range c.Env {
		var kind, name, key string
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = envVar{e.Value, "literal"}
			continue
		case e.ValueFrom.SecretKeyRef != nil:
			kind, name, key = "Secret", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key
		case e.ValueFrom.ConfigMapKeyRef != nil:
			kind, name, key = "ConfigMap", e.ValueFrom.ConfigMapKeyRef.Name, e.ValueFrom.ConfigMapKeyRef.Key
		default:
			out[e.Name] = envVar{"", "runtime"}
			continue
		}
		data, err := m.data(kind, name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name, err)
		}
		v, ok := data[key]
		if !ok {
			return nil, fmt.Errorf("%s: %s %q has no key %q", e.Name, kind, name, key)
		}
		out[e.Name] = envVar{v, strings.ToLower(kind)}
	}
	return out, nil
}

// data is the data of the ConfigMap or Secret (kind) called name, as the variables
// that reference it get it.
func (m *manifest) data(kind, name string) (map[string]string, error) {
	switch kind {
	case "ConfigMap":
		if cm, ok := m.configMaps[name]; ok {
			return cm.Data, nil
		}
	case "Secret":
		if s, ok := m.secrets[name]; ok {
			data := make(map[string]string, len(s.Data))
			for k, v := range s.Data {
				data[k] = string(v)
			}
			return data, nil
		}
	}
	return nil, fmt.Errorf("%s %q does not exist", kind, name)
}

// setting is the value a program sees for name in container c: the manifests' value,
// else the program's default.
func (m *manifest) setting(t *testing.T, c corev1.Container, p program, name string) string {
	t.Helper()
	env, err := m.env(c)
	if err != nil {
		t.Fatalf("%s: container %s: %v", m.overlay, c.Name, err)
	}
	if v, ok := env[name]; ok {
		return v.value
	}
	def, ok := p.defaults[name]
	if !ok {
		t.Fatalf("%s: %s neither sets %s nor has a default for it", m.overlay, p.name, name)
	}
	return def
}

// imageProgram is the program an image runs: the last path element of its name,
// without tag or digest (registry.example.com/outboxtodo/api:v1 runs api).
func imageProgram(image string) string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return path.Base(name)
}

// containerProgram is the program a container runs: the binary its command names (an
// image may carry several, as the api image carries todoctl), else its image's own.
func containerProgram(c corev1.Container) string {
	if len(c.Command) > 0 {
		return path.Base(c.Command[0])
	}
	return imageProgram(c.Image)
}

// imageTag is the tag of image, or "" when it has none.
func imageTag(image string) string {
	name, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		return name[i+1:]
	}
	return ""
}

// containers lists the init and regular containers of a pod.
func containers(pod *corev1.PodTemplateSpec) []corev1.Container {
	return append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...)
}
