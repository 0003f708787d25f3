package deploy_test

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// endpoint is one end of a connection, as NetworkPolicy sees it.
type endpoint struct {
	// podLabels are the pod's labels; nil outside the cluster.
	podLabels map[string]string
	// nsLabels are the labels of the pod's namespace; nil for the
	// manifests' own namespace.
	nsLabels map[string]string
}

func (e endpoint) external() bool { return e.podLabels == nil }

// outside is any address outside the cluster.
var outside = endpoint{}

// kubeDNS is the cluster DNS as the manifests address it.
var kubeDNS = endpoint{
	podLabels: map[string]string{"k8s-app": "kube-dns"},
	nsLabels:  map[string]string{"kubernetes.io/metadata.name": "kube-system"},
}

func selects(sel *metav1.LabelSelector, lbls map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(lbls))
}

// peerMatches reports whether a NetworkPolicy peer covers e. A peer with
// only a podSelector means pods of the policy's own namespace.
func peerMatches(p networkingv1.NetworkPolicyPeer, e endpoint) bool {
	if p.IPBlock != nil {
		// CIDRs are not modelled: an ipBlock is taken to mean "outside
		// the cluster" (pod IPs are not stable enough to be named).
		return e.external()
	}
	if e.external() {
		return false
	}
	if p.NamespaceSelector == nil {
		return e.nsLabels == nil && selects(p.PodSelector, e.podLabels)
	}
	if e.nsLabels == nil || !selects(p.NamespaceSelector, e.nsLabels) {
		return false
	}
	return p.PodSelector == nil || selects(p.PodSelector, e.podLabels)
}

func portMatches(ports []networkingv1.NetworkPolicyPort, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		want := corev1.ProtocolTCP
		if p.Protocol != nil {
			want = *p.Protocol
		}
		if want == proto && p.Port != nil && int32(p.Port.IntValue()) == port {
			return true
		}
	}
	return false
}

func hasType(p *networkingv1.NetworkPolicy, want networkingv1.PolicyType) bool {
	for _, pt := range p.Spec.PolicyTypes {
		if pt == want {
			return true
		}
	}
	return false
}

// egressAllowed reports whether a pod with labels from may open a
// connection to `to` on port: allowed when no policy isolates it for
// egress, or when a policy selecting it has a rule for that peer and port.
func (m *manifests) egressAllowed(from map[string]string, to endpoint, port int32, proto corev1.Protocol) bool {
	isolated := false
	for _, p := range m.netpols {
		if !hasType(p, networkingv1.PolicyTypeEgress) || !selects(&p.Spec.PodSelector, from) {
			continue
		}
		isolated = true
		for _, r := range p.Spec.Egress {
			if !portMatches(r.Ports, port, proto) {
				continue
			}
			if len(r.To) == 0 {
				return true
			}
			for _, peer := range r.To {
				if peerMatches(peer, to) {
					return true
				}
			}
		}
	}
	return !isolated
}

// ingressAllowed is egressAllowed's counterpart at the receiving pod.
func (m *manifests) ingressAllowed(to map[string]string, from endpoint, port int32) bool {
	isolated := false
	for _, p := range m.netpols {
		if !hasType(p, networkingv1.PolicyTypeIngress) || !selects(&p.Spec.PodSelector, to) {
			continue
		}
		isolated = true
		for _, r := range p.Spec.Ingress {
			if !portMatches(r.Ports, port, corev1.ProtocolTCP) {
				continue
			}
			if len(r.From) == 0 {
				return true
			}
			for _, peer := range r.From {
				if peerMatches(peer, from) {
					return true
				}
			}
		}
	}
	return !isolated
}

// reachable reports whether a pod may connect to an endpoint on port:
// both the egress side and, for pods in this namespace, the ingress side
// must allow it.
func (m *manifests) reachable(from map[string]string, to endpoint, port int32) bool {
	if !m.egressAllowed(from, to, port, corev1.ProtocolTCP) {
		return false
	}
	if to.external() || to.nsLabels != nil {
		return true
	}
	return m.ingressAllowed(to.podLabels, endpoint{podLabels: from}, port)
}

// egressPorts lists every port a pod's egress rules open; ok is false when
// some rule opens all ports.
func (m *manifests) egressPorts(from map[string]string) (ports []int32, ok bool) {
	ok = true
	for _, p := range m.netpols {
		if !hasType(p, networkingv1.PolicyTypeEgress) || !selects(&p.Spec.PodSelector, from) {
			continue
		}
		for _, r := range p.Spec.Egress {
			if len(r.Ports) == 0 {
				ok = false
			}
			for _, port := range r.Ports {
				if port.Port != nil {
					ports = append(ports, int32(port.Port.IntValue()))
				}
			}
		}
	}
	return ports, ok
}
