package deploy_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// secretsName is the Secret the overlays provide (dev: development values,
// prod: placeholders the pipeline replaces).
const secretsName = "dataport-secrets"

type overlay struct {
	name string
	dir  string
	// streamReplicas is DATAPORT_STREAM_REPLICAS in this environment.
	streamReplicas int
}

var overlays = []overlay{
	{name: "dev", dir: "k8s/overlays/dev", streamReplicas: 1},
	{name: "prod", dir: "k8s/overlays/prod", streamReplicas: 3},
}

// containerEnv is a container's environment as the kubelet would build it:
// envFrom first, then env. refs lists references to objects or keys the
// rendered manifests do not contain.
type containerEnv struct {
	values  map[string]string
	set     map[string]bool
	missing []string
}

func (m *manifests) env(c *corev1.Container) containerEnv {
	e := containerEnv{values: map[string]string{}, set: map[string]bool{}}
	put := func(k, v string) { e.values[k], e.set[k] = v, true }
	for _, src := range c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, ok := m.configMaps[src.ConfigMapRef.Name]
			if !ok {
				e.missing = append(e.missing, "ConfigMap "+src.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				put(src.Prefix+k, v)
			}
		case src.SecretRef != nil:
			s, ok := m.secrets[src.SecretRef.Name]
			if !ok {
				e.missing = append(e.missing, "Secret "+src.SecretRef.Name)
				continue
			}
			for k, v := range s.Data {
				put(src.Prefix+k, string(v))
			}
		}
	}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			put(v.Name, v.Value)
		case v.ValueFrom.SecretKeyRef != nil:
			ref := v.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				e.missing = append(e.missing, "Secret "+ref.Name)
				e.set[v.Name] = true
				continue
			}
			val, ok := s.Data[ref.Key]
			if !ok {
				e.missing = append(e.missing, fmt.Sprintf("Secret %s key %s", ref.Name, ref.Key))
			}
			put(v.Name, string(val))
		case v.ValueFrom.ConfigMapKeyRef != nil:
			ref := v.ValueFrom.ConfigMapKeyRef
			val, ok := m.configMaps[ref.Name].Data[ref.Key]
			if !ok {
				e.missing = append(e.missing, fmt.Sprintf("ConfigMap %s key %s", ref.Name, ref.Key))
			}
			put(v.Name, val)
		default: // fieldRef, resourceFieldRef: filled in by the kubelet
			put(v.Name, "")
		}
	}
	return e
}

// containerPort resolves a probe's or Service's port (a number or a name)
// against a container's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// imageRepo returns an image reference's repository without registry
// host, tag or digest's last path element: "registry/x/gateway:1" gives
// "gateway".
func imageRepo(image string) string {
	image, _, _ = strings.Cut(image, "@")
	last := image[strings.LastIndex(image, "/")+1:]
	last, _, _ = strings.Cut(last, ":")
	return last
}

func duration(t *testing.T, env map[string]string, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(env[name])
	require.NoError(t, err, "%s=%q", name, env[name])
	return d
}

// TestKustomizeBase renders the base alone: it must build, decode strictly
// and hold every per-workload invariant; only the Secret and the
// infrastructure come from the overlays.
func TestKustomizeBase(t *testing.T) {
	m := render(t, "k8s/base")
	checkWorkloads(t, m)
	checkServices(t, m, false)
	for _, s := range services {
		d := m.deployments[s.name]
		require.NotNil(t, d, "Deployment %s", s.name)
		e := m.env(&d.Spec.Template.Spec.Containers[0])
		for _, miss := range e.missing {
			assert.True(t, strings.HasPrefix(miss, "Secret "+secretsName), "%s refers to %s, which the base lacks", s.name, miss)
		}
	}
	assert.Empty(t, m.secrets, "secrets belong to the overlays")
}

func TestKustomizeOverlays(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.name, func(t *testing.T) {
			m := render(t, o.dir)
			checkWorkloads(t, m)
			checkServices(t, m, true)
			checkNetwork(t, m)
			checkScaling(t, m)

			nats := m.statefulSets["nats"]
			require.NotNil(t, nats, "NATS StatefulSet")
			for _, s := range services {
				env := m.env(&m.deployments[s.name].Spec.Template.Spec.Containers[0]).values
				assert.Equal(t, strconv.Itoa(o.streamReplicas), env["DATAPORT_STREAM_REPLICAS"], "%s: stream replicas", s.name)
			}
			// A stream cannot have more replicas than there are servers.
			assert.GreaterOrEqual(t, int(*nats.Spec.Replicas), o.streamReplicas, "NATS servers")
			ns := m.namespaces["dataport"]
			require.NotNil(t, ns)
			assert.Equal(t, "restricted", ns.Labels["pod-security.kubernetes.io/enforce"])
		})
	}
}

// checkWorkloads holds for every Deployment and StatefulSet, infrastructure
// included.
func checkWorkloads(t *testing.T, m *manifests) {
	t.Helper()
	require.NotEmpty(t, m.workloads())
	for _, w := range m.workloads() {
		where := w.kind + " " + w.name
		spec := &w.template.Spec
		require.NotNil(t, w.selector, "%s: selector", where)
		assert.NotEmpty(t, w.selector.MatchLabels, "%s: selector", where)
		assert.True(t, selects(w.selector, w.template.Labels), "%s: selector %v does not match template labels %v", where, w.selector, w.template.Labels)

		if assert.NotEmpty(t, spec.ServiceAccountName, "%s: service account", where) {
			sa := m.serviceAccounts[spec.ServiceAccountName]
			if assert.NotNil(t, sa, "%s: ServiceAccount %s", where, spec.ServiceAccountName) {
				assert.False(t, sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken, "%s: ServiceAccount must not automount its token", where)
			}
		}
		assert.False(t, spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken, "%s: pod must not mount an API token", where)

		psc := spec.SecurityContext
		require.NotNil(t, psc, "%s: pod securityContext", where)
		assert.True(t, psc.RunAsNonRoot != nil && *psc.RunAsNonRoot, "%s: runAsNonRoot", where)
		assert.True(t, psc.RunAsUser != nil && *psc.RunAsUser != 0, "%s: runAsUser must be a non-zero uid", where)
		assert.True(t, psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault, "%s: seccomp RuntimeDefault", where)
		assert.Empty(t, spec.InitContainers, "%s: init containers are not checked; add them here first", where)

		for i := range spec.Containers {
			c := &spec.Containers[i]
			cw := where + " container " + c.Name
			for probeName, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if !assert.NotNil(t, p, "%s: %s probe", cw, probeName) {
					continue
				}
				if assert.NotNil(t, p.HTTPGet, "%s: %s probe is httpGet", cw, probeName) {
					_, ok := containerPort(c, p.HTTPGet.Port)
					assert.True(t, ok, "%s: %s probe port %s is not a container port", cw, probeName, p.HTTPGet.Port.String())
				}
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
				assert.False(t, req.IsZero(), "%s: %s request", cw, res)
				assert.False(t, lim.IsZero(), "%s: %s limit", cw, res)
				assert.LessOrEqual(t, req.Cmp(lim), 0, "%s: %s request above limit", cw, res)
			}
			sc := c.SecurityContext
			if !assert.NotNil(t, sc, "%s: securityContext", cw) {
				continue
			}
			assert.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation false", cw)
			assert.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", cw)
			assert.True(t, sc.Privileged == nil || !*sc.Privileged, "%s: privileged", cw)
			assert.True(t, sc.RunAsUser == nil || *sc.RunAsUser != 0, "%s: runs as root", cw)
			if assert.NotNil(t, sc.Capabilities, "%s: capabilities", cw) {
				assert.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"), "%s: drop ALL capabilities", cw)
				assert.Empty(t, sc.Capabilities.Add, "%s: added capabilities", cw)
			}
		}
	}
	for name, pdb := range m.pdbs {
		n := 0
		for _, w := range m.workloads() {
			if selects(pdb.Spec.Selector, w.template.Labels) {
				n++
			}
		}
		assert.Equal(t, 1, n, "PodDisruptionBudget %s must select exactly one workload", name)
	}
	for name, s := range m.services {
		assert.NotEmpty(t, s.Spec.Selector, "Service %s: selector", name)
		var found bool
		for _, w := range m.workloads() {
			if len(s.Spec.Selector) == 0 || !selects(mapSelector(s.Spec.Selector), w.template.Labels) {
				continue
			}
			found = true
			for _, p := range s.Spec.Ports {
				_, ok := containerPort(&w.template.Spec.Containers[0], p.TargetPort)
				assert.True(t, ok, "Service %s port %s: target port %s is not a port of %s", name, p.Name, p.TargetPort.String(), w.name)
			}
		}
		assert.True(t, found, "Service %s selects no Deployment or StatefulSet", name)
	}
}

// checkServices holds for the five Dataport services. complete says the
// manifests include the overlay's Secret, so every reference must resolve.
func checkServices(t *testing.T, m *manifests, complete bool) {
	t.Helper()
	for _, s := range services {
		d := m.deployments[s.name]
		require.NotNil(t, d, "Deployment %s", s.name)
		spec := &d.Spec.Template.Spec
		require.Len(t, spec.Containers, 1, "%s: one container", s.name)
		c := &spec.Containers[0]
		assert.Equal(t, s.name, c.Name, "%s: container name", s.name)
		assert.Equal(t, s.name, imageRepo(c.Image), "%s: image %s is not the service's", s.name, c.Image)
		assert.Equal(t, s.name, d.Spec.Template.Labels["app.kubernetes.io/name"], "%s: name label", s.name)

		e := m.env(c)
		if complete {
			assert.Empty(t, e.missing, "%s: references to objects the overlay does not render", s.name)
		}
		checkVars(t, "k8s Deployment "+s.name, codeVars(t, s.dir), e.set, hasMain(s.dir))

		// The probes reach the address the service listens on.
		_, port := hostPort(t, e.values[s.addrVar])
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			got, _ := containerPort(c, p.HTTPGet.Port)
			assert.Equal(t, int32(port), got, "%s: probe port vs %s=%s", s.name, s.addrVar, e.values[s.addrVar])
		}
		assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path, "%s: liveness", s.name)
		assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path, "%s: readiness", s.name)

		// Kubernetes kills the pod after the grace period: it must outlast
		// the service's own shutdown (plus any preStop pause) and the
		// longest time a task may go without an ack.
		grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		assert.Greater(t, grace, duration(t, e.values, "DATAPORT_SHUTDOWN_TIMEOUT")+preStop, "%s: termination grace vs shutdown timeout", s.name)
		assert.Greater(t, grace, duration(t, e.values, "DATAPORT_TASK_ACK_WAIT"), "%s: termination grace vs task ack wait", s.name)

		var pdbs int
		for _, pdb := range m.pdbs {
			if selects(pdb.Spec.Selector, d.Spec.Template.Labels) {
				pdbs++
			}
		}
		assert.Equal(t, 1, pdbs, "%s: PodDisruptionBudgets", s.name)
	}

	// Signed links: the notifier mails links the gateway must accept.
	gw := m.env(&m.deployments["gateway"].Spec.Template.Spec.Containers[0]).values
	nt := m.env(&m.deployments["notifier"].Spec.Template.Spec.Containers[0]).values
	for _, v := range []string{"DATAPORT_PUBLIC_URL", "DATAPORT_LINK_TTL", "DATAPORT_LINK_SECRET"} {
		assert.Equal(t, gw[v], nt[v], "gateway and notifier must agree on %s", v)
	}
	// Signed tasks: an exporter fails every task whose signature it
	// cannot verify with the gateway's keys.
	for _, name := range taskKeyHolders[1:] {
		ex := m.env(&m.deployments[name].Spec.Template.Spec.Containers[0]).values
		for _, v := range []string{"DATAPORT_TASK_SECRET", "DATAPORT_TASK_PREVIOUS_SECRETS"} {
			assert.Equal(t, gw[v], ex[v], "gateway and %s must agree on %s", name, v)
		}
	}
}

// target resolves a host:port a service is configured with to what
// NetworkPolicy sees: the pods behind a Service of the manifests and their
// container port, or an address outside the cluster.
func (m *manifests) target(t *testing.T, host string, port int) (endpoint, int32) {
	t.Helper()
	name, _, _ := strings.Cut(host, ".")
	svc, ok := m.services[name]
	if !ok || (strings.Contains(host, ".") && !strings.Contains(host, ".svc")) {
		return outside, int32(port)
	}
	for _, sp := range svc.Spec.Ports {
		if int(sp.Port) != port {
			continue
		}
		for _, w := range m.workloads() {
			if selects(mapSelector(svc.Spec.Selector), w.template.Labels) {
				cp, ok := containerPort(&w.template.Spec.Containers[0], sp.TargetPort)
				require.True(t, ok, "Service %s port %d", name, port)
				return endpoint{podLabels: w.template.Labels}, cp
			}
		}
	}
	t.Fatalf("Service %s has no port %d backed by a workload", name, port)
	return endpoint{}, 0
}

// checkNetwork checks the NetworkPolicies: everything is denied unless
// allowed; only the gateway is reachable from outside the namespace; each
// service reaches exactly DNS, NATS, object storage and (the notifier)
// SMTP and webhook receivers, at the addresses its configuration names.
func checkNetwork(t *testing.T, m *manifests) {
	t.Helper()
	dd := m.netpols["default-deny"]
	require.NotNil(t, dd, "default-deny NetworkPolicy")
	assert.Empty(t, dd.Spec.PodSelector.MatchLabels, "default-deny selects every pod")
	assert.Empty(t, dd.Spec.PodSelector.MatchExpressions, "default-deny selects every pod")
	assert.ElementsMatch(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, dd.Spec.PolicyTypes)
	assert.Empty(t, dd.Spec.Ingress)
	assert.Empty(t, dd.Spec.Egress)

	// A rule open to the world (no from, an ipBlock or any namespace) may
	// only select gateway pods, even on ports nothing listens on yet.
	for name, p := range m.netpols {
		for _, r := range p.Spec.Ingress {
			open := len(r.From) == 0 || slices.ContainsFunc(r.From, func(peer networkingv1.NetworkPolicyPeer) bool {
				return peer.IPBlock != nil || (peer.NamespaceSelector != nil && len(peer.NamespaceSelector.MatchLabels) == 0 && len(peer.NamespaceSelector.MatchExpressions) == 0)
			})
			if !open {
				continue
			}
			assert.Equal(t, map[string]string{"app.kubernetes.io/name": "gateway"}, p.Spec.PodSelector.MatchLabels, "NetworkPolicy %s opens ingress to the world for pods other than the gateway", name)
			assert.Empty(t, p.Spec.PodSelector.MatchExpressions, "NetworkPolicy %s", name)
		}
	}

	otherNamespace := endpoint{podLabels: map[string]string{"app": "x"}, nsLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere"}}
	for _, w := range m.workloads() {
		lbls := w.template.Labels
		assert.True(t, m.egressAllowed(lbls, kubeDNS, 53, corev1.ProtocolUDP), "%s: DNS over UDP", w.name)
		assert.True(t, m.egressAllowed(lbls, kubeDNS, 53, corev1.ProtocolTCP), "%s: DNS over TCP", w.name)
		for _, c := range w.template.Spec.Containers {
			for _, p := range c.Ports {
				fromOutside := m.ingressAllowed(lbls, outside, p.ContainerPort) || m.ingressAllowed(lbls, otherNamespace, p.ContainerPort)
				if w.name == "gateway" && p.Name == "metrics" {
					assert.False(t, fromOutside, "gateway's metrics port %d must not be reachable from outside", p.ContainerPort)
				} else if w.name == "gateway" {
					assert.True(t, fromOutside, "gateway must be reachable from outside on %d", p.ContainerPort)
				} else {
					assert.False(t, fromOutside, "%s must not be reachable from outside on %d", w.name, p.ContainerPort)
				}
			}
		}
	}

	checkScraping(t, m)

	for _, s := range services {
		d := m.deployments[s.name]
		lbls := d.Spec.Template.Labels
		env := m.env(&d.Spec.Template.Spec.Containers[0]).values
		allowed := []int32{53}
		need := []string{"DATAPORT_NATS_URL", "DATAPORT_S3_ENDPOINT"}
		if s.name == "notifier" {
			need = append(need, "DATAPORT_SMTP_HOST")
			// Webhook receivers are anywhere on the internet.
			for _, port := range []int32{443, 80} {
				allowed = append(allowed, port)
				assert.True(t, m.egressAllowed(lbls, outside, port, corev1.ProtocolTCP), "notifier must reach webhook receivers on %d", port)
			}
		}
		for _, v := range need {
			addr := env[v]
			if v == "DATAPORT_SMTP_HOST" {
				addr = env[v] + ":" + env["DATAPORT_SMTP_PORT"]
			}
			host, port := hostPort(t, addr)
			to, cport := m.target(t, host, port)
			allowed = append(allowed, cport)
			assert.True(t, m.reachable(lbls, to, cport), "%s cannot reach %s=%s (port %d)", s.name, v, env[v], cport)
		}
		ports, ok := m.egressPorts(lbls)
		assert.True(t, ok, "%s: an egress rule opens every port", s.name)
		for _, p := range ports {
			assert.Contains(t, allowed, p, "%s: egress to port %d is not needed by its configuration", s.name, p)
		}
	}
}

// checkScraping checks that Prometheus in the monitoring namespace can
// scrape every service where the service serves /metrics, and that the
// gateway's API port, which the Ingress publishes, serves none.
func checkScraping(t *testing.T, m *manifests) {
	t.Helper()
	monitoring := endpoint{podLabels: map[string]string{"app.kubernetes.io/name": "prometheus"}, nsLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	for _, s := range services {
		d := m.deployments[s.name]
		tmpl := d.Spec.Template
		env := m.env(&tmpl.Spec.Containers[0]).values
		metricsVar := s.addrVar
		if s.name == "gateway" {
			metricsVar = "DATAPORT_OPS_ADDR"
			require.NotEmpty(t, env[metricsVar], "gateway: without DATAPORT_OPS_ADDR its /metrics is on the API port the Ingress publishes")
			assert.NotEqual(t, env["DATAPORT_HTTP_ADDR"], env[metricsVar], "gateway: metrics and API share a port")
		}
		_, port := hostPort(t, env[metricsVar])
		assert.Equal(t, "true", tmpl.Annotations["prometheus.io/scrape"], "%s: not marked for scraping", s.name)
		assert.Equal(t, strconv.Itoa(port), tmpl.Annotations["prometheus.io/port"], "%s: the scrape port is not where %s listens", s.name, metricsVar)
		assert.Equal(t, "/metrics", tmpl.Annotations["prometheus.io/path"], s.name)
		assert.True(t, slices.ContainsFunc(tmpl.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == port }),
			"%s: port %d is not declared", s.name, port)
		assert.True(t, m.ingressAllowed(tmpl.Labels, monitoring, int32(port)), "%s: Prometheus in namespace monitoring cannot reach port %d", s.name, port)
	}
}

// checkScaling checks the references of autoscalers and Ingresses.
func checkScaling(t *testing.T, m *manifests) {
	t.Helper()
	for name, h := range m.hpas {
		ref := h.Spec.ScaleTargetRef
		require.Equal(t, "Deployment", ref.Kind, "HPA %s", name)
		d := m.deployments[ref.Name]
		require.NotNil(t, d, "HPA %s targets a missing Deployment %s", name, ref.Name)
		require.NotNil(t, h.Spec.MinReplicas)
		assert.GreaterOrEqual(t, *h.Spec.MinReplicas, int32(2), "HPA %s: fewer than 2 replicas is no redundancy", name)
		assert.Less(t, *h.Spec.MinReplicas, h.Spec.MaxReplicas, "HPA %s", name)
		for _, metric := range h.Spec.Metrics {
			if metric.Resource != nil && metric.Resource.Target.AverageUtilization != nil {
				req := d.Spec.Template.Spec.Containers[0].Resources.Requests[metric.Resource.Name]
				assert.False(t, req.IsZero(), "HPA %s: utilization needs a %s request", name, metric.Resource.Name)
			}
		}
		assert.Nil(t, m.scaledObjects[ref.Name], "HPA %s and a ScaledObject both scale %s", name, ref.Name)
	}
	for name, so := range m.scaledObjects {
		d := m.deployments[so.Spec.ScaleTargetRef.Name]
		require.NotNil(t, d, "ScaledObject %s targets a missing Deployment", name)
		assert.Nil(t, d.Spec.Replicas, "ScaledObject %s: the Deployment must not set replicas (apply would fight KEDA)", name)
	}
	for name, ing := range m.ingresses {
		for _, r := range ing.Spec.Rules {
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				require.NotNil(t, b, "Ingress %s", name)
				assert.Equal(t, "gateway", b.Name, "Ingress %s: only the gateway is exposed", name)
				svc := m.services[b.Name]
				require.NotNil(t, svc, "Ingress %s: Service %s", name, b.Name)
				assert.True(t, slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
					return sp.Name == b.Port.Name && (b.Port.Name != "" || sp.Port == b.Port.Number)
				}), "Ingress %s: Service %s has no port %v", name, b.Name, b.Port)
			}
		}
	}
}

func TestProdOverlay(t *testing.T) {
	m := render(t, "k8s/overlays/prod")

	t.Run("NATS cluster", func(t *testing.T) {
		nats := m.statefulSets["nats"]
		require.NotNil(t, nats)
		assert.Equal(t, int32(3), *nats.Spec.Replicas)
		// The generated ConfigMap's name carries a content hash: follow
		// the StatefulSet's volume to it.
		var conf string
		for _, v := range nats.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil {
				cm := m.configMaps[v.ConfigMap.Name]
				require.NotNil(t, cm, "ConfigMap %s", v.ConfigMap.Name)
				conf = cm.Data["nats.conf"]
			}
		}
		require.NotEmpty(t, conf, "nats.conf")
		assert.Contains(t, nats.Spec.Template.Spec.Containers[0].Args, "/etc/nats/nats.conf")
		// DESIGN.md, Known traps: acknowledged writes must be on disk.
		assert.Regexp(t, `(?m)^\s*sync_interval:\s*always\s*$`, conf)
		assert.Regexp(t, `(?m)^\s*jetstream\s*\{`, conf)
		assert.Regexp(t, `(?m)^\s*server_name:\s*\$POD_NAME\s*$`, conf)
		for i := range int(*nats.Spec.Replicas) {
			assert.Contains(t, conf, fmt.Sprintf("nats://%s-%d.%s:6222", nats.Name, i, nats.Spec.ServiceName), "route to server %d", i)
		}
		headless := m.services[nats.Spec.ServiceName]
		require.NotNil(t, headless)
		assert.Equal(t, corev1.ClusterIPNone, headless.Spec.ClusterIP)
		assert.True(t, headless.Spec.PublishNotReadyAddresses, "servers must find each other before they are ready")
		peer := endpoint{podLabels: nats.Spec.Template.Labels}
		assert.True(t, m.reachable(nats.Spec.Template.Labels, peer, 6222), "cluster routes between NATS servers")
		assert.NotNil(t, m.pdbs["nats"], "NATS PodDisruptionBudget keeps the quorum")
	})

	t.Run("external S3", func(t *testing.T) {
		env := m.env(&m.deployments["archiver"].Spec.Template.Spec.Containers[0]).values
		assert.Equal(t, "true", env["DATAPORT_S3_USE_TLS"])
		host, _ := hostPort(t, env["DATAPORT_S3_ENDPOINT"])
		assert.NotContains(t, m.services, host, "prod uses object storage outside the cluster")
		assert.Empty(t, m.statefulSets["minio"])
	})

	t.Run("secrets are placeholders", func(t *testing.T) {
		s := generated(t, m.secrets, secretsName)
		dev := generated(t, render(t, "k8s/overlays/dev").secrets, secretsName)
		// Keys whose empty value means "none" (no earlier link or task
		// keys, no HS256 JWTs) are committed empty; every other is a placeholder
		// the pipeline replaces (the services refuse a signing key left
		// at REPLACE_ME, so a forgotten one stops the rollout).
		optional := []string{"DATAPORT_LINK_PREVIOUS_SECRETS", "DATAPORT_TASK_PREVIOUS_SECRETS", "DATAPORT_JWT_HS256_SECRET"}
		for k, v := range s.Data {
			if slices.Contains(optional, k) {
				assert.Empty(t, string(v), "%s: committed empty", k)
				assert.Contains(t, dev.Data, k)
				continue
			}
			assert.Equal(t, "REPLACE_ME", string(v), "%s: the committed prod secrets are placeholders", k)
			assert.Contains(t, dev.Data, k)
		}
		assert.Len(t, s.Data, len(dev.Data))
	})

	t.Run("gateway", func(t *testing.T) {
		require.NotNil(t, m.hpas["gateway"], "gateway HPA")
		ing := m.ingresses["gateway"]
		require.NotNil(t, ing)
		require.NotEmpty(t, ing.Spec.TLS, "the Ingress terminates TLS")
		env := m.env(&m.deployments["gateway"].Spec.Template.Spec.Containers[0]).values
		assert.Equal(t, "https://"+ing.Spec.Rules[0].Host, env["DATAPORT_PUBLIC_URL"], "links must point at the Ingress")
	})

	t.Run("exporters scale on their consumer", func(t *testing.T) {
		consts := busConstants(t)
		consumers := map[string]bool{}
		for _, ex := range exporters {
			so := m.scaledObjects[ex.name]
			require.NotNil(t, so, "ScaledObject %s", ex.name)
			assert.Equal(t, ex.name, so.Spec.ScaleTargetRef.Name)
			require.NotNil(t, so.Spec.MinReplicaCount)
			require.NotNil(t, so.Spec.MaxReplicaCount)
			assert.GreaterOrEqual(t, *so.Spec.MinReplicaCount, int32(1))
			assert.Greater(t, *so.Spec.MaxReplicaCount, *so.Spec.MinReplicaCount)
			require.NotNil(t, so.Spec.Fallback, "%s: replicas to hold when the metric cannot be read", ex.name)
			require.Len(t, so.Spec.Triggers, 1)
			tr := so.Spec.Triggers[0]
			assert.Equal(t, "nats-jetstream", tr.Type)
			assert.Equal(t, consts["StreamExportTasks"], tr.Metadata["stream"])
			require.NotEmpty(t, consts[ex.consumerConst], ex.consumerConst)
			assert.Equal(t, consts[ex.consumerConst], tr.Metadata["consumer"], "%s scales on its own consumer", ex.name)
			assert.False(t, consumers[tr.Metadata["consumer"]], "%s: consumer %s scales two Deployments", ex.name, tr.Metadata["consumer"])
			consumers[tr.Metadata["consumer"]] = true
			assert.Equal(t, "$G", tr.Metadata["account"])
			env := m.env(&m.deployments[ex.name].Spec.Template.Spec.Containers[0]).values
			assert.Equal(t, env["DATAPORT_EXPORTER_CONCURRENCY"], tr.Metadata["lagThreshold"], "%s: one pod per DATAPORT_EXPORTER_CONCURRENCY waiting tasks", ex.name)

			// KEDA reads the monitoring port of each server (the stream
			// leader's) through the headless Service, from its namespace.
			host, port := hostPort(t, tr.Metadata["natsServerMonitoringEndpoint"])
			svcName, _, _ := strings.Cut(host, ".")
			svc := m.services[svcName]
			require.NotNil(t, svc, "%s: monitoring endpoint Service %s", ex.name, svcName)
			assert.Equal(t, corev1.ClusterIPNone, svc.Spec.ClusterIP, "per-server DNS names need the headless Service")
			keda := endpoint{podLabels: map[string]string{"app": "keda-operator"}, nsLabels: map[string]string{"kubernetes.io/metadata.name": "keda"}}
			nats := m.statefulSets["nats"].Spec.Template.Labels
			assert.True(t, m.ingressAllowed(nats, keda, int32(port)), "KEDA must reach NATS monitoring")
		}
	})
}

func TestDevOverlay(t *testing.T) {
	m := render(t, "k8s/overlays/dev")
	assert.Equal(t, int32(1), *m.statefulSets["nats"].Spec.Replicas, "single-node NATS")
	assert.Equal(t, int32(1), *m.statefulSets["minio"].Spec.Replicas, "single-node MinIO")
	assert.NotNil(t, m.deployments["mailpit"])
	args := m.statefulSets["nats"].Spec.Template.Spec.Containers[0].Args
	assert.Contains(t, args, "-js", "JetStream enabled")
	assert.Empty(t, m.scaledObjects, "dev clusters need not run KEDA")
	assert.Empty(t, m.ingresses)
}

// TestExporterHPAComponent renders prod with components/exporter-hpa, the
// documented way to run without KEDA.
func TestExporterHPAComponent(t *testing.T) {
	prod, err := filepath.Abs("k8s/overlays/prod")
	require.NoError(t, err)
	component, err := filepath.Abs("k8s/components/exporter-hpa")
	require.NoError(t, err)
	dir := t.TempDir()
	// kustomize takes only relative paths to other kustomizations.
	prod, err = filepath.Rel(dir, prod)
	require.NoError(t, err)
	component, err = filepath.Rel(dir, component)
	require.NoError(t, err)
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: dataport\nresources: [%q]\ncomponents: [%q]\n", prod, component)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600))

	m := render(t, dir)
	assert.Empty(t, m.scaledObjects, "the component removes the ScaledObjects")
	for _, ex := range exporters {
		h := m.hpas[ex.name]
		require.NotNil(t, h, "HPA %s", ex.name)
		assert.Equal(t, ex.name, h.Spec.ScaleTargetRef.Name)
	}
	checkScaling(t, m)
}

// busConstants reads the string constants of shared/bus/topology.go, where
// every stream and consumer name is declared.
func busConstants(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(repoRoot, "shared/bus/topology.go"), nil, parser.SkipObjectResolution)
	require.NoError(t, err)
	out := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						out[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	require.NotEmpty(t, out["StreamExportTasks"])
	require.NotEmpty(t, out["ConsumerRoomExporter"])
	return out
}

// generated finds an object a kustomize generator made: its name is the
// generator's name plus a hash of the content.
func generated[T any](t *testing.T, objs map[string]*T, name string) *T {
	t.Helper()
	var found []*T
	for n, o := range objs {
		if n == name || (strings.HasPrefix(n, name+"-") && !strings.Contains(n[len(name)+1:], "-")) {
			found = append(found, o)
		}
	}
	require.Len(t, found, 1, "generated object %s", name)
	return found[0]
}

// mapSelector turns a Service's selector into a label selector.
func mapSelector(m map[string]string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: m}
}
