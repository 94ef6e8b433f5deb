// Package envvars computes the service environment variables a Pod's containers start with, in
// the format kubelet uses (pkg/kubelet/envvars upstream), and expands $(VAR) references in
// container env, command and args. The agent feeds it the Services of its informer cache; the
// result goes into the process environment and never back to the API.
package envvars

import (
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// MasterServiceNamespace and MasterServiceName name the Service every Pod gets variables for,
// whatever its namespace and enableServiceLinks say (upstream's "master services").
const (
	MasterServiceNamespace = "default"
	MasterServiceName      = "kubernetes"
)

// FromServices returns the variables of services, in the order kubelet builds them: per
// Service, _SERVICE_HOST, _SERVICE_PORT (the first port), one _SERVICE_PORT_<NAME> per named
// port, then the Docker-links variables. Services without a cluster IP (headless, ExternalName)
// get none, since there is no single address to name.
func FromServices(services []*corev1.Service) []corev1.EnvVar {
	var out []corev1.EnvVar
	for _, svc := range services {
		if !hasClusterIP(svc) || len(svc.Spec.Ports) == 0 {
			continue
		}
		prefix := variableName(svc.Name)
		ip := svc.Spec.ClusterIP
		out = append(out,
			corev1.EnvVar{Name: prefix + "_SERVICE_HOST", Value: ip},
			corev1.EnvVar{Name: prefix + "_SERVICE_PORT", Value: strconv.Itoa(int(svc.Spec.Ports[0].Port))})
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				out = append(out, corev1.EnvVar{Name: prefix + "_SERVICE_PORT_" + variableName(p.Name), Value: strconv.Itoa(int(p.Port))})
			}
		}
		out = append(out, linkVariables(prefix, ip, svc.Spec.Ports)...)
	}
	return out
}

// linkVariables are the variables Docker's --link once set; the first port also gets the bare
// <SVC>_PORT, as Docker did.
func linkVariables(prefix, ip string, ports []corev1.ServicePort) []corev1.EnvVar {
	var out []corev1.EnvVar
	for i, p := range ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		lower := strings.ToLower(proto)
		port := strconv.Itoa(int(p.Port))
		url := lower + "://" + net.JoinHostPort(ip, port)
		if i == 0 {
			out = append(out, corev1.EnvVar{Name: prefix + "_PORT", Value: url})
		}
		portPrefix := prefix + "_PORT_" + port + "_" + strings.ToUpper(proto)
		out = append(out,
			corev1.EnvVar{Name: portPrefix, Value: url},
			corev1.EnvVar{Name: portPrefix + "_PROTO", Value: lower},
			corev1.EnvVar{Name: portPrefix + "_PORT", Value: port},
			corev1.EnvVar{Name: portPrefix + "_ADDR", Value: ip})
	}
	return out
}

func hasClusterIP(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone
}

// variableName turns a DNS label into a variable name: my-svc → MY_SVC.
func variableName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// ForPod picks the Services whose variables a Pod in namespace gets, as kubelet does: the
// kubernetes Service of the default namespace always, the namespace's own Services only when
// enableServiceLinks is true (nil means true, the API default). A Service of the Pod's own
// namespace named like a master service shadows the master one. The result is sorted by
// variable name, so a Pod's environment does not depend on map or informer order.
func ForPod(namespace string, enableServiceLinks *bool, services []*corev1.Service) []corev1.EnvVar {
	links := enableServiceLinks == nil || *enableServiceLinks
	chosen := map[string]*corev1.Service{}
	for _, svc := range services {
		if !hasClusterIP(svc) {
			continue
		}
		switch {
		case svc.Namespace == MasterServiceNamespace && svc.Name == MasterServiceName:
			if _, taken := chosen[svc.Name]; !taken {
				chosen[svc.Name] = svc
			}
		case svc.Namespace == namespace && links:
			chosen[svc.Name] = svc
		}
	}
	list := make([]*corev1.Service, 0, len(chosen))
	for _, svc := range chosen {
		list = append(list, svc)
	}
	vars := FromServices(list)
	sort.SliceStable(vars, func(i, j int) bool { return vars[i].Name < vars[j].Name })
	return vars
}

// Expand replaces $(NAME) in s with lookup(NAME) when lookup knows it, turns $$ into $, and
// leaves every other reference as written — upstream's rules, so a Pod spec means the same here.
func Expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// ContainerEnv is a container's environment as kubelet builds it: the container's own env in
// order, each value expanded against the variables defined before it and the service
// variables, then the service variables the container did not set itself. valueFrom sources
// this agent cannot resolve (secrets, config maps) are left empty; fieldRef is resolved by
// fieldValue. Returns KEY=value strings for exec.
func ContainerEnv(c *corev1.Container, service []corev1.EnvVar, fieldValue func(path string) string) []string {
	defined := map[string]string{}
	serviceMap := map[string]string{}
	for _, v := range service {
		serviceMap[v.Name] = v.Value
	}
	lookup := func(name string) (string, bool) {
		if v, ok := defined[name]; ok {
			return v, true
		}
		v, ok := serviceMap[name]
		return v, ok
	}
	var out []string
	var order []string
	for _, e := range c.Env {
		value := Expand(e.Value, lookup)
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && fieldValue != nil {
			value = fieldValue(e.ValueFrom.FieldRef.FieldPath)
		}
		if _, seen := defined[e.Name]; !seen {
			order = append(order, e.Name)
		}
		defined[e.Name] = value
	}
	for _, name := range order {
		out = append(out, name+"="+defined[name])
	}
	for _, v := range service {
		if _, own := defined[v.Name]; !own {
			out = append(out, v.Name+"="+v.Value)
		}
	}
	return out
}
