package envvars

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func service(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: ip, Ports: ports},
	}
}

func port(name string, number int32, proto corev1.Protocol) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: number, Protocol: proto}
}

func render(vars []corev1.EnvVar) string {
	var lines []string
	for _, v := range vars {
		lines = append(lines, v.Name+"="+v.Value)
	}
	return strings.Join(lines, "\n")
}

// The expected texts are kubelet's output for the same Services, variable for variable and in
// kubelet's order.
func TestFromServicesMatchesKubelet(t *testing.T) {
	cases := []struct {
		name     string
		services []*corev1.Service
		want     string
	}{
		{
			name:     "one unnamed TCP port, dashes become underscores",
			services: []*corev1.Service{service("ns", "redis-master", "10.0.0.11", port("", 6379, corev1.ProtocolTCP))},
			want: `REDIS_MASTER_SERVICE_HOST=10.0.0.11
REDIS_MASTER_SERVICE_PORT=6379
REDIS_MASTER_PORT=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP=tcp://10.0.0.11:6379
REDIS_MASTER_PORT_6379_TCP_PROTO=tcp
REDIS_MASTER_PORT_6379_TCP_PORT=6379
REDIS_MASTER_PORT_6379_TCP_ADDR=10.0.0.11`,
		},
		{
			name: "named ports, UDP, empty protocol means TCP, only the first port gets _PORT",
			services: []*corev1.Service{service("ns", "dns", "10.96.0.10",
				port("dns", 53, corev1.ProtocolUDP), port("dns-tcp", 53, ""))},
			want: `DNS_SERVICE_HOST=10.96.0.10
DNS_SERVICE_PORT=53
DNS_SERVICE_PORT_DNS=53
DNS_SERVICE_PORT_DNS_TCP=53
DNS_PORT=udp://10.96.0.10:53
DNS_PORT_53_UDP=udp://10.96.0.10:53
DNS_PORT_53_UDP_PROTO=udp
DNS_PORT_53_UDP_PORT=53
DNS_PORT_53_UDP_ADDR=10.96.0.10
DNS_PORT_53_TCP=tcp://10.96.0.10:53
DNS_PORT_53_TCP_PROTO=tcp
DNS_PORT_53_TCP_PORT=53
DNS_PORT_53_TCP_ADDR=10.96.0.10`,
		},
		{
			name:     "IPv6 cluster IP is bracketed in URLs only",
			services: []*corev1.Service{service("ns", "v6", "fd00::10", port("http", 80, corev1.ProtocolSCTP))},
			want: `V6_SERVICE_HOST=fd00::10
V6_SERVICE_PORT=80
V6_SERVICE_PORT_HTTP=80
V6_PORT=sctp://[fd00::10]:80
V6_PORT_80_SCTP=sctp://[fd00::10]:80
V6_PORT_80_SCTP_PROTO=sctp
V6_PORT_80_SCTP_PORT=80
V6_PORT_80_SCTP_ADDR=fd00::10`,
		},
		{
			name: "headless and ExternalName Services get nothing",
			services: []*corev1.Service{
				service("ns", "headless", corev1.ClusterIPNone, port("", 80, corev1.ProtocolTCP)),
				service("ns", "external", "", port("", 80, corev1.ProtocolTCP)),
			},
			want: ``,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := render(FromServices(tc.services)); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func names(vars []corev1.EnvVar) []string {
	var out []string
	for _, v := range vars {
		if strings.HasSuffix(v.Name, "_SERVICE_HOST") {
			out = append(out, v.Name+"="+v.Value)
		}
	}
	return out
}

func TestForPodChoosesServicesLikeKubelet(t *testing.T) {
	off, on := false, true
	all := []*corev1.Service{
		service("default", "kubernetes", "10.96.0.1", port("https", 443, corev1.ProtocolTCP)),
		service("default", "other", "10.96.0.2", port("", 80, corev1.ProtocolTCP)),
		service("app", "web", "10.96.0.3", port("", 80, corev1.ProtocolTCP)),
		service("app", "none", corev1.ClusterIPNone, port("", 80, corev1.ProtocolTCP)),
		service("shadow", "kubernetes", "10.96.0.4", port("", 443, corev1.ProtocolTCP)),
	}
	cases := []struct {
		name  string
		ns    string
		links *bool
		want  []string
	}{
		{"links default to on", "app", nil, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "WEB_SERVICE_HOST=10.96.0.3"}},
		{"links on", "app", &on, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "WEB_SERVICE_HOST=10.96.0.3"}},
		{"links off keeps the kubernetes Service", "app", &off, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1"}},
		{"default namespace sees its own Services", "default", nil, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1", "OTHER_SERVICE_HOST=10.96.0.2"}},
		{"a namespace's own kubernetes Service wins", "shadow", nil, []string{"KUBERNETES_SERVICE_HOST=10.96.0.4"}},
		{"links off: the default kubernetes Service even when shadowed", "shadow", &off, []string{"KUBERNETES_SERVICE_HOST=10.96.0.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(ForPod(tc.ns, tc.links, all)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestExpandFollowsUpstreamRules(t *testing.T) {
	vars := map[string]string{"A": "x", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	cases := map[string]string{
		"plain":         "plain",
		"$(A)":          "x",
		"pre-$(A)-post": "pre-x-post",
		"$(EMPTY)|":     "|",
		"$(MISSING)":    "$(MISSING)",
		"$$(A)":         "$(A)",
		"$$":            "$",
		"$A":            "$A",
		"$(A":           "$(A",
		"trailing$":     "trailing$",
	}
	for in, want := range cases {
		if got := Expand(in, lookup); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnvOrderAndShadowing(t *testing.T) {
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "FIRST", Value: "1"},
		{Name: "REF", Value: "$(FIRST)-$(WEB_SERVICE_HOST)-$(LATER)"},
		{Name: "LATER", Value: "2"},
		{Name: "WEB_SERVICE_HOST", Value: "mine"},
		{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}}
	service := []corev1.EnvVar{{Name: "WEB_SERVICE_HOST", Value: "10.96.0.3"}, {Name: "WEB_SERVICE_PORT", Value: "80"}}
	got := ContainerEnv(c, service, func(path string) string { return "field:" + path })
	want := []string{"FIRST=1", "REF=1-10.96.0.3-$(LATER)", "LATER=2", "WEB_SERVICE_HOST=mine", "POD=field:metadata.name", "WEB_SERVICE_PORT=80"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
