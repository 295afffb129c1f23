// Package kubernetes holds the Kubernetes manifests of codeexec (a kustomize
// base, components and an example overlay) and this test of them. Only the
// test imports kustomize, client-go and the Prometheus operator's types, so
// none of them reaches the codeexec binary.
//
// The test renders each kustomization with kustomize's own Go packages,
// decodes every object strictly (an unknown field fails) with client-go's
// scheme and the operator's ServiceMonitor type, and checks what a cluster
// would only report at run time: selectors that match the pods, ports that
// exist, Secrets and ConfigMaps that exist or are documented as the
// operator's, the HPA's target and metrics, the termination grace against
// --shutdown-grace, and that codeexec itself accepts the settings.
package kubernetes_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"codeexec/internal/config"
)

// operatorSecrets are the Secrets the manifests reference but do not
// create: the operator makes them (docs/scaling.md says how), with these
// keys.
var operatorSecrets = map[string][]string{
	"codeexec-secrets": {"api-keys", "database-url", "node-secret", "s3-access-key-id", "s3-secret-access-key"},
}

// multiNodeEnv are the variables that make the pods nodes sharing the work
// (docs/scaling.md): each pod must set them.
var multiNodeEnv = []string{"CODEEXEC_DATABASE", "CODEEXEC_BLOB_STORE", "CODEEXEC_ADVERTISE_ADDR", "CODEEXEC_NODE_SECRET"}

// rendered is one kustomization's output, decoded.
type rendered struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	monitors    []*monitoringv1.ServiceMonitor
	accounts    map[string]*corev1.ServiceAccount
	namespaces  []*corev1.Namespace
}

// strictDecoder decodes JSON into the types of client-go's scheme plus the
// ServiceMonitor, failing on unknown and duplicate fields.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := monitoringv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, s, s, kjson.SerializerOptions{Strict: true})
}

// render runs kustomize on dir (relative to this package) and decodes every
// object it emits.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	dec := strictDecoder(t)
	r := &rendered{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		accounts: map[string]*corev1.ServiceAccount{}}
	if len(m.Resources()) == 0 {
		t.Fatalf("kustomize %s: no objects", dir)
	}
	for _, res := range m.Resources() {
		b, err := res.MarshalJSON()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, res.CurId(), err)
		}
		obj, _, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Fatalf("%s: decode %s strictly: %v", dir, res.CurId(), err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *corev1.ConfigMap:
			r.configMaps[o.Name] = o
		case *corev1.Secret:
			r.secrets[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs = append(r.pdbs, o)
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas = append(r.hpas, o)
		case *monitoringv1.ServiceMonitor:
			r.monitors = append(r.monitors, o)
		case *corev1.ServiceAccount:
			r.accounts[o.Name] = o
		case *corev1.Namespace:
			r.namespaces = append(r.namespaces, o)
		default:
			t.Fatalf("%s: %s: a kind this test does not check (%T): add its checks", dir, res.CurId(), obj)
		}
	}
	return r
}

// TestStrictDecoderRefusesUnknownFields proves that the decoder the other
// tests rely on fails on a misspelt field, in a core type and in the CRD.
func TestStrictDecoderRefusesUnknownFields(t *testing.T) {
	dec := strictDecoder(t)
	for _, doc := range []string{
		`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replica":2}}`,
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"ports":[{"port":80,"targetport":"http"}]}}`,
		`{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"x"},"spec":{"endpoints":[{"prot":"http"}]}}`,
	} {
		if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil || !runtime.IsStrictDecodingError(err) {
			t.Errorf("decode %s: err = %v, want a strict decoding error", doc, err)
		}
	}
	ok := `{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"x"},"spec":{"selector":{},"endpoints":[{"port":"http"}]}}`
	if _, _, err := dec.Decode([]byte(ok), nil, nil); err != nil {
		t.Errorf("decode %s: %v", ok, err)
	}
}

func TestBase(t *testing.T) {
	r := render(t, "base")
	checkCommon(t, r)
	if len(r.monitors) != 0 {
		t.Errorf("base has %d ServiceMonitors; it must apply without the operator's CRDs", len(r.monitors))
	}
	hpa := r.hpas[0]
	if len(hpa.Spec.Metrics) != 1 || hpa.Spec.Metrics[0].Type != autoscalingv2.ResourceMetricSourceType {
		t.Errorf("base HPA metrics = %+v, want CPU alone (a metric no adapter serves stops scale-down)", hpa.Spec.Metrics)
	}
}

func TestExampleOverlay(t *testing.T) {
	r := render(t, "overlays/example")
	checkCommon(t, r)
	d := r.deployments[0]
	if d.Namespace != "codeexec" {
		t.Errorf("namespace = %q", d.Namespace)
	}
	if len(r.namespaces) != 1 || r.namespaces[0].Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace must admit privileged pods: %+v", r.namespaces)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.example.com/codeexec:v0.1.0" {
		t.Errorf("image = %q", img)
	}
	if *d.Spec.Replicas != 3 || *r.hpas[0].Spec.MinReplicas != 3 {
		t.Errorf("replicas %d, minReplicas %d, want 3", *d.Spec.Replicas, *r.hpas[0].Spec.MinReplicas)
	}
	cm := r.configMaps[d.Spec.Template.Spec.Containers[0].EnvFrom[0].ConfigMapRef.Name]
	if got := cm.Data["CODEEXEC_BLOB_STORE"]; !strings.HasPrefix(got, "s3://codeexec-files?") {
		t.Errorf("merged CODEEXEC_BLOB_STORE = %q", got)
	}
	if cm.Data["CODEEXEC_POOL_SIZE"] != "4" {
		t.Errorf("the merge lost the base's settings: %v", cm.Data)
	}

	// ServiceMonitor: selects the Service, scrapes a named port of it.
	if len(r.monitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(r.monitors))
	}
	sm, svc := r.monitors[0], r.services[0]
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v (%v) does not select Service labels %v", sm.Spec.Selector, err, svc.Labels)
	}
	if sm.Namespace != svc.Namespace {
		t.Errorf("ServiceMonitor in %q, Service in %q (no namespaceSelector)", sm.Namespace, svc.Namespace)
	}
	for _, ep := range sm.Spec.Endpoints {
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
			t.Errorf("ServiceMonitor port %q is not a port name of the Service", ep.Port)
		}
		if ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor path %q, want /metrics", ep.Path)
		}
	}

	// The queue metric: served by the adapter rule, asked for by the HPA,
	// exported by the server.
	var names []string
	for _, m := range r.hpas[0].Spec.Metrics {
		if m.Type == autoscalingv2.PodsMetricSourceType {
			names = append(names, m.Pods.Metric.Name)
			if m.Pods.Target.Type != autoscalingv2.AverageValueMetricType || m.Pods.Target.AverageValue.IsZero() {
				t.Errorf("queue metric target %+v, want a non-zero AverageValue", m.Pods.Target)
			}
			if want := resource.MustParse(cm.Data["CODEEXEC_POOL_SIZE"]); m.Pods.Target.AverageValue.Cmp(want) != 0 {
				t.Errorf("queue metric target %v, want CODEEXEC_POOL_SIZE (%v), as the component says", m.Pods.Target.AverageValue, &want)
			}
		}
	}
	if !slices.Equal(names, []string{"codeexec_queue_depth"}) {
		t.Fatalf("HPA Pods metrics = %v, want [codeexec_queue_depth]", names)
	}
	checkAdapterRule(t, names[0])
}

// checkAdapterRule checks the Prometheus adapter rule of the
// queue-autoscaling component: strict shape, it serves metric under that
// name, and the server exports a gauge of that name.
func checkAdapterRule(t *testing.T, metric string) {
	t.Helper()
	b, err := os.ReadFile("components/queue-autoscaling/prometheus-adapter-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type resourceRef struct {
		Resource string `json:"resource"`
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery string `json:"seriesQuery"`
			Resources   struct {
				Overrides map[string]resourceRef `json:"overrides"`
			} `json:"resources"`
			Name struct {
				Matches string `json:"matches"`
				As      string `json:"as"`
			} `json:"name"`
			MetricsQuery string `json:"metricsQuery"`
		} `json:"rules"`
	}
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatalf("adapter rules: %v", err)
	}
	if len(cfg.Rules) != 1 {
		t.Fatalf("%d adapter rules, want 1", len(cfg.Rules))
	}
	rule := cfg.Rules[0]
	if rule.Name.As != metric || !strings.HasPrefix(rule.SeriesQuery, metric+"{") ||
		!regexp.MustCompile(rule.Name.Matches).MatchString(metric) {
		t.Errorf("adapter rule %+v does not serve %s", rule, metric)
	}
	if rule.Resources.Overrides["pod"].Resource != "pod" || rule.Resources.Overrides["namespace"].Resource != "namespace" {
		t.Errorf("adapter rule must map the pod and namespace labels: %+v", rule.Resources.Overrides)
	}
	if !strings.Contains(rule.MetricsQuery, "<<.Series>>") || !strings.Contains(rule.MetricsQuery, "<<.LabelMatchers>>") {
		t.Errorf("metricsQuery %q must use <<.Series>> and <<.LabelMatchers>>", rule.MetricsQuery)
	}
	src, err := os.ReadFile("../../internal/server/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(`prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "`+metric+`"`)) {
		t.Errorf("internal/server/metrics.go exports no gauge %s", metric)
	}
}

// checkCommon checks what every rendering must satisfy.
func checkCommon(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.deployments) != 1 || len(r.services) != 1 || len(r.pdbs) != 1 || len(r.hpas) != 1 {
		t.Fatalf("want one Deployment, Service, PDB and HPA; got %d, %d, %d, %d",
			len(r.deployments), len(r.services), len(r.pdbs), len(r.hpas))
	}
	d := r.deployments[0]
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Selectors.
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment selector %v (%v) does not match its pod labels %v", d.Spec.Selector, err, pod.Labels)
	}
	svc := r.services[0]
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service selector %v does not match pod labels %v", svc.Spec.Selector, pod.Labels)
	}
	pdb := r.pdbs[0]
	sel, err = metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("PDB selector %v (%v) does not match pod labels %v", pdb.Spec.Selector, err, pod.Labels)
	}
	if pdb.Namespace != d.Namespace || svc.Namespace != d.Namespace {
		t.Errorf("namespaces differ: Deployment %q, Service %q, PDB %q", d.Namespace, svc.Namespace, pdb.Namespace)
	}
	for _, tsc := range pod.Spec.TopologySpreadConstraints {
		sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil || !sel.Matches(podLabels) {
			t.Errorf("topology spread selector %v does not match the pods", tsc.LabelSelector)
		}
	}

	// Ports: the Service's targets and the probes' ports are container ports.
	for _, p := range svc.Spec.Ports {
		if !hasPort(c, p.TargetPort) {
			t.Errorf("Service port %q targets %v, not a port of container %s", p.Name, p.TargetPort.String(), c.Name)
		}
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET", name)
			continue
		}
		if !hasPort(c, p.HTTPGet.Port) {
			t.Errorf("%s probe port %v is not a container port", name, p.HTTPGet.Port.String())
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness on %q, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness on %q, want /healthz", c.LivenessProbe.HTTPGet.Path)
	}

	// HPA: targets this Deployment, which has the CPU request its
	// utilization is measured against.
	hpa := r.hpas[0]
	ref := hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name || hpa.Namespace != d.Namespace {
		t.Errorf("HPA targets %+v in %q, want Deployment %s in %q", ref, hpa.Namespace, d.Name, d.Namespace)
	}
	if !slices.ContainsFunc(hpa.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool {
		return m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource.Name == corev1.ResourceCPU &&
			m.Resource.Target.Type == autoscalingv2.UtilizationMetricType
	}) {
		t.Errorf("HPA has no CPU utilization metric: %+v", hpa.Spec.Metrics)
	}
	if c.Resources.Requests.Cpu().IsZero() {
		t.Error("no CPU request: the HPA's utilization has nothing to divide by")
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("HPA replicas %v..%d: want at least 2, so the PDB lets one go", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}

	// ServiceAccount.
	if _, ok := r.accounts[pod.Spec.ServiceAccountName]; !ok {
		t.Errorf("service account %q is not rendered", pod.Spec.ServiceAccountName)
	}

	env := checkReferences(t, r, pod.Spec)
	checkEnv(t, c, env)
	checkTermination(t, pod.Spec, c, env)
	checkResources(t, c, env)
	checkSecurity(t, pod.Spec, c)
}

func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool {
		if p.Type == intstr.String {
			return cp.Name == p.StrVal
		}
		return cp.ContainerPort == p.IntVal
	})
}

// checkReferences checks that every ConfigMap and Secret the pod uses
// exists in r, or is an operator's Secret with the key asked for, and that
// those are documented in docs/scaling.md. It returns the container's
// environment as the kubelet would build it, with the operator's Secret
// values as placeholders and $(VAR) references expanded.
func checkReferences(t *testing.T, r *rendered, spec corev1.PodSpec) map[string]string {
	t.Helper()
	docs, err := os.ReadFile("../../docs/scaling.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, keys := range operatorSecrets {
		if !bytes.Contains(docs, []byte("create secret generic "+name)) {
			t.Errorf("docs/scaling.md does not say how to create Secret %s", name)
		}
		for _, k := range keys {
			if !bytes.Contains(docs, []byte("--from-literal="+k+"=")) && !bytes.Contains(docs, []byte("--from-file="+k+"=")) {
				t.Errorf("docs/scaling.md does not create key %s of Secret %s", k, name)
			}
		}
	}
	secretValue := func(name, key string) (string, bool) {
		if s, ok := r.secrets[name]; ok {
			v, ok := s.Data[key]
			if !ok {
				v, ok := s.StringData[key]
				return v, ok
			}
			return string(v), ok
		}
		if slices.Contains(operatorSecrets[name], key) {
			return placeholder(key), true
		}
		return "", false
	}
	configValue := func(name, key string) (string, bool) {
		cm, ok := r.configMaps[name]
		if !ok {
			return "", false
		}
		v, ok := cm.Data[key]
		return v, ok
	}
	for _, v := range spec.Volumes {
		switch {
		case v.Secret != nil:
			if _, ok := r.secrets[v.Secret.SecretName]; !ok && operatorSecrets[v.Secret.SecretName] == nil {
				t.Errorf("volume %s: Secret %q is neither rendered nor the operator's", v.Name, v.Secret.SecretName)
			}
		case v.ConfigMap != nil:
			if _, ok := r.configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("volume %s: ConfigMap %q is not rendered", v.Name, v.ConfigMap.Name)
			}
		}
	}
	env := map[string]string{}
	c := spec.Containers[0]
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := r.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("envFrom: ConfigMap %q is not rendered", ef.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			t.Errorf("envFrom Secret %q: name each key instead, so the test can check it", ef.SecretRef.Name)
		}
	}
	expand := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			var missing []string
			env[e.Name] = expand.ReplaceAllStringFunc(e.Value, func(m string) string {
				name := m[2 : len(m)-1]
				v, ok := env[name]
				if !ok {
					missing = append(missing, name)
				}
				return v
			})
			if len(missing) > 0 {
				t.Errorf("env %s refers to %v, not defined before it (the kubelet would leave it unexpanded)", e.Name, missing)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secretValue(ref.Name, ref.Key)
			if !ok {
				t.Errorf("env %s: key %q of Secret %q is neither rendered nor the operator's", e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := configValue(ref.Name, ref.Key)
			if !ok {
				t.Errorf("env %s: key %q of ConfigMap %q is not rendered", e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			if e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
				t.Errorf("env %s from %s: not checked by this test", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = "10.1.2.3" // never dialled: a value for the checks below
		default:
			t.Errorf("env %s: a source this test does not check", e.Name)
		}
	}
	return env
}

// placeholder is a stand-in value for an operator's Secret key, of the
// shape codeexec checks (API keys of at least 16 characters).
func placeholder(key string) string {
	if key == "database-url" {
		return "postgres://codeexec:placeholder@db.invalid:5432/codeexec"
	}
	return "placeholder-" + key + "-0123456789abcdef"
}

// checkEnv checks that codeexec accepts the environment: every CODEEXEC_
// variable is a setting of `codeexec serve`, the multi-node ones are set,
// each parses, and the whole passes Config.Validate.
func checkEnv(t *testing.T, c corev1.Container, env map[string]string) {
	t.Helper()
	cfg := config.Default()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.Register(fs)
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[config.EnvName(f.Name)] = true })
	for k := range env {
		if strings.HasPrefix(k, "CODEEXEC_") && !known[k] {
			t.Errorf("%s is not a setting of codeexec serve", k)
		}
	}
	for _, k := range multiNodeEnv {
		if env[k] == "" {
			t.Errorf("%s is not set", k)
		}
	}
	if got, want := env["CODEEXEC_ADVERTISE_ADDR"], "10.1.2.3:8080"; got != want {
		t.Errorf("CODEEXEC_ADVERTISE_ADDR = %q, want the pod IP and the container port (%q)", got, want)
	}
	if err := config.ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("codeexec refuses the environment: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("codeexec refuses the settings: %v", err)
	}
	if cfg.DataDir == "" || !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == cfg.DataDir }) {
		t.Errorf("data directory %q is not a mounted volume (the root file system is read-only)", cfg.DataDir)
	}
	if _, port, _ := strings.Cut(cfg.Addr, ":"); !hasPort(c, intstr.Parse(port)) {
		t.Errorf("codeexec listens on %q, not a container port", cfg.Addr)
	}
	if len(cfg.APIKeys) == 0 {
		t.Error("no API keys: codeexec would refuse to listen beyond loopback")
	}
	// The shell wrapper: Kubernetes reduces $$ to $ and expands $(NAME) in
	// args, so neither may appear, and it must exec the server.
	script := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
	if strings.Contains(script, "$$") || strings.Contains(script, "$(") {
		t.Errorf("command %q uses $$ or $(...), which Kubernetes rewrites", script)
	}
	if !strings.Contains(script, "exec /usr/local/bin/codeexec serve") {
		t.Errorf("command %q does not exec codeexec serve", script)
	}
}

// checkTermination checks that the kubelet waits for the server's whole
// shutdown: the preStop sleep, --shutdown-grace, then 5 s for connections.
func checkTermination(t *testing.T, spec corev1.PodSpec, c corev1.Container, env map[string]string) {
	t.Helper()
	grace, err := time.ParseDuration(env["CODEEXEC_SHUTDOWN_GRACE"])
	if err != nil {
		t.Fatalf("CODEEXEC_SHUTDOWN_GRACE: %v", err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	total := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + grace + 5*time.Second; total <= need {
		t.Errorf("terminationGracePeriodSeconds %v, want more than preStop %v + shutdown grace %v + 5 s", total, preStop, grace)
	}
}

// checkResources checks the memory sizing: request equals limit, and the
// ceiling of all sandboxes leaves the server 1 GiB of the limit, as the
// rule in deployment.yaml says.
func checkResources(t *testing.T, c corev1.Container, env map[string]string) {
	t.Helper()
	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if req.IsZero() || req.Cmp(*lim) != 0 {
		t.Errorf("memory request %v, limit %v: want both, equal", req, lim)
	}
	sandboxes := resource.MustParse(env["CODEEXEC_SANDBOXES_MEMORY_MB"] + "Mi")
	if sandboxes.IsZero() {
		t.Fatal("CODEEXEC_SANDBOXES_MEMORY_MB unset: codeexec would size it from the node's memory")
	}
	server := lim.DeepCopy()
	server.Sub(sandboxes)
	if want := resource.MustParse("1Gi"); server.Cmp(want) != 0 {
		t.Errorf("limit %v less sandboxes %v leaves %v for the server, want 1Gi", lim, &sandboxes, &server)
	}
	if env["CODEEXEC_SANDBOXES_PIDS"] == "" {
		t.Error("CODEEXEC_SANDBOXES_PIDS unset: codeexec would size it from the node's kernel.pid_max")
	}
}

// checkSecurity checks the security context that docs/scaling.md and
// deployment.yaml explain.
func checkSecurity(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Fatal("the container must be privileged (deployment.yaml says why)")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
		t.Errorf("seccomp %+v, want Unconfined", sc.SeccompProfile)
	}
	if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("AppArmor %+v, want Unconfined", sc.AppArmorProfile)
	}
	if spec.HostUsers != nil && !*spec.HostUsers {
		t.Error("hostUsers: false: the pod's user namespace has no room for the sandboxes' 65,536 ids")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system should be read-only")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pods never call the API: mount no token")
	}
	if spec.HostPID || spec.HostIPC || spec.HostNetwork || (spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace) {
		t.Error("host namespaces or a shared pid namespace: the sandbox's cgroup sweep judges pids in its own")
	}
	docs, err := os.ReadFile("../../docs/scaling.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"privileged: true", "seccompProfile", "appArmorProfile", "hostUsers", "procMount", "pod-security.kubernetes.io/enforce"} {
		if !bytes.Contains(docs, []byte(s)) {
			t.Errorf("docs/scaling.md does not explain %s", s)
		}
	}
}

// TestKustomizationsListEveryFile fails when a manifest lies beside the
// kustomizations without being part of one, where it would be silently
// left out of every rendering.
func TestKustomizationsListEveryFile(t *testing.T) {
	listed := map[string]bool{}
	for _, dir := range []string{"base", "components/servicemonitor", "components/queue-autoscaling", "overlays/example"} {
		b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			Resources []string `json:"resources"`
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			t.Fatal(err)
		}
		for _, r := range k.Resources {
			listed[filepath.Join(dir, r)] = true
		}
		listed[filepath.Join(dir, "kustomization.yaml")] = true
	}
	// Documentation, not objects (checked by TestExampleOverlay).
	listed["components/queue-autoscaling/prometheus-adapter-rules.yaml"] = true
	files, err := filepath.Glob("*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("*/*/*.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		t.Fatal("no manifests found")
	}
	for _, f := range files {
		if !listed[f] {
			t.Errorf("%s is in no kustomization", f)
		}
	}
}
