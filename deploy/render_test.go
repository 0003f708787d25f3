package deploy_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) these
// manifests use. Decoding is strict, so a field KEDA does not have (or one
// added here without a test) fails the test instead of being ignored.
type scaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Fallback        *struct {
			FailureThreshold int32 `json:"failureThreshold"`
			Replicas         int32 `json:"replicas"`
		} `json:"fallback,omitempty"`
		Advanced *struct {
			HorizontalPodAutoscalerConfig *struct {
				Name     string                                         `json:"name,omitempty"`
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name,omitempty"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// manifests is one rendered kustomization, decoded into API types and
// indexed by name.
type manifests struct {
	namespaces      map[string]*corev1.Namespace
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	services        map[string]*corev1.Service
	deployments     map[string]*appsv1.Deployment
	statefulSets    map[string]*appsv1.StatefulSet
	pdbs            map[string]*policyv1.PodDisruptionBudget
	netpols         map[string]*networkingv1.NetworkPolicy
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses       map[string]*networkingv1.Ingress
	scaledObjects   map[string]*scaledObject
}

// render builds the kustomization in dir (relative to this module) with
// the kustomize Go API, as `kubectl apply -k` would, and decodes every
// object strictly: an unknown or misspelt field is an error, not a field
// the API server silently drops.
func render(t *testing.T, dir string) *manifests {
	t.Helper()
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), abs)
	require.NoError(t, err, "kustomize build %s", dir)

	m := &manifests{
		namespaces:      map[string]*corev1.Namespace{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps:      map[string]*corev1.ConfigMap{},
		secrets:         map[string]*corev1.Secret{},
		services:        map[string]*corev1.Service{},
		deployments:     map[string]*appsv1.Deployment{},
		statefulSets:    map[string]*appsv1.StatefulSet{},
		pdbs:            map[string]*policyv1.PodDisruptionBudget{},
		netpols:         map[string]*networkingv1.NetworkPolicy{},
		hpas:            map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		ingresses:       map[string]*networkingv1.Ingress{},
		scaledObjects:   map[string]*scaledObject{},
	}
	for _, r := range resMap.Resources() {
		y, err := r.AsYAML()
		require.NoError(t, err)
		kind, name := r.GetKind(), r.GetName()
		where := fmt.Sprintf("%s: %s %s", dir, kind, name)
		apiVersion := r.GetApiVersion()
		decode := func(want string, into any) {
			require.Equal(t, want, apiVersion, "%s: apiVersion", where)
			require.NoError(t, yaml.UnmarshalStrict(y, into), "%s: strict decode", where)
		}
		if kind != "Namespace" {
			require.Equal(t, "dataport", r.GetNamespace(), "%s: namespace", where)
		}
		switch kind {
		case "Namespace":
			o := &corev1.Namespace{}
			decode("v1", o)
			m.namespaces[name] = o
		case "ServiceAccount":
			o := &corev1.ServiceAccount{}
			decode("v1", o)
			m.serviceAccounts[name] = o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			decode("v1", o)
			m.configMaps[name] = o
		case "Secret":
			o := &corev1.Secret{}
			decode("v1", o)
			m.secrets[name] = o
		case "Service":
			o := &corev1.Service{}
			decode("v1", o)
			m.services[name] = o
		case "Deployment":
			o := &appsv1.Deployment{}
			decode("apps/v1", o)
			m.deployments[name] = o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			decode("apps/v1", o)
			m.statefulSets[name] = o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			decode("policy/v1", o)
			m.pdbs[name] = o
		case "NetworkPolicy":
			o := &networkingv1.NetworkPolicy{}
			decode("networking.k8s.io/v1", o)
			m.netpols[name] = o
		case "HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			decode("autoscaling/v2", o)
			m.hpas[name] = o
		case "Ingress":
			o := &networkingv1.Ingress{}
			decode("networking.k8s.io/v1", o)
			m.ingresses[name] = o
		case "ScaledObject":
			o := &scaledObject{}
			decode("keda.sh/v1alpha1", o)
			m.scaledObjects[name] = o
		default:
			t.Fatalf("%s: no strict decoder for this kind; add one to render", where)
		}
	}
	return m
}

// workload is a Deployment or StatefulSet, seen through its pod template.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	replicas   *int32
	template   *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for n, d := range m.deployments {
		out = append(out, workload{kind: "Deployment", name: n, selector: d.Spec.Selector, replicas: d.Spec.Replicas, template: &d.Spec.Template})
	}
	for n, s := range m.statefulSets {
		out = append(out, workload{kind: "StatefulSet", name: n, selector: s.Spec.Selector, replicas: s.Spec.Replicas, template: &s.Spec.Template})
	}
	return out
}
