package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/svcplane/svcplane/test/testserver"
)

const webService = `
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: frontend}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
`

// TestKubectlServiceWalkthrough is the README walkthrough: apply, get, get -o yaml, describe,
// get -w seeing an update, delete — all through the installed kubectl.
func TestKubectlServiceWalkthrough(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})

	out, stderr, err := s.KubectlWithInput(t, webService, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, stderr)
	}
	mustContain(t, "apply output", out, "service/web created")

	out, _, err = s.Kubectl(t, "get", "svc", "web")
	if err != nil {
		t.Fatal(err)
	}
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if strings.Join(header, " ") != "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE" {
		t.Errorf("kubectl get svc columns = %v, want upstream's", header)
	}
	mustContain(t, "get svc", out, "web", "ClusterIP", "80/TCP")

	out, _, err = s.Kubectl(t, "get", "svc", "web", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "get -o yaml", out, "sessionAffinity: None", "type: ClusterIP", "protocol: TCP",
		"targetPort: 8080", "app: web", "resourceVersion:", "uid:")

	out, _, err = s.Kubectl(t, "describe", "svc", "web")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "describe", out, "Name:", "web", "Namespace:", "default", "Selector:", "app=web",
		"Type:", "ClusterIP", "Port:", "http  80/TCP", "TargetPort:", "8080/TCP")

	// get -w prints the object, then a line for every change.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watcher := exec.CommandContext(ctx, testserver.KubectlPath(t), "--kubeconfig", s.Kubeconfig,
		"get", "svc", "web", "-w", "-o", "custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier")
	stdout, err := watcher.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watcher.Process.Kill(); _ = watcher.Wait() }()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	waitForLine(t, lines, "frontend")
	if _, stderr, err := s.Kubectl(t, "label", "svc", "web", "tier=backend", "--overwrite"); err != nil {
		t.Fatalf("kubectl label: %v\n%s", err, stderr)
	}
	waitForLine(t, lines, "backend")

	out, stderr, err = s.Kubectl(t, "delete", "svc", "web")
	if err != nil {
		t.Fatalf("kubectl delete: %v\n%s", err, stderr)
	}
	mustContain(t, "delete", out, `service "web" deleted`)
	if _, stderr, err := s.Kubectl(t, "get", "svc", "web"); err == nil || !strings.Contains(stderr, "NotFound") {
		t.Errorf("get after delete: want NotFound, got err=%v stderr=%s", err, stderr)
	}
}

func waitForLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl get -w ended before printing %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timeout:
			t.Fatalf("kubectl get -w did not print %q within 15s", want)
		}
	}
}

// TestKubectlTableColumns checks `kubectl get` prints upstream's columns for every served kind.
func TestKubectlTableColumns(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	manifests := []string{webService}
	for _, rc := range servedResources() {
		if rc.gvr.Resource != "services" && rc.gvr.Resource != "namespaces" {
			manifests = append(manifests, rc.manifest)
		}
	}
	if _, stderr, err := s.KubectlWithInput(t, strings.Join(manifests, "\n---\n"), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, stderr)
	}
	want := map[string]string{
		"services":       "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
		"pods":           "NAME READY STATUS RESTARTS AGE",
		"endpoints":      "NAME ENDPOINTS AGE",
		"endpointslices": "NAME ADDRESSTYPE PORTS ENDPOINTS AGE",
		"nodes":          "NAME STATUS ROLES AGE VERSION",
		"deployments":    "NAME READY UP-TO-DATE AVAILABLE AGE",
		"replicasets":    "NAME DESIRED CURRENT READY AGE",
		"namespaces":     "NAME STATUS AGE",
		"events":         "LAST SEEN TYPE REASON OBJECT MESSAGE",
		"svc":            "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
		"ep":             "NAME ENDPOINTS AGE",
		"deploy":         "NAME READY UP-TO-DATE AVAILABLE AGE",
		"rs":             "NAME DESIRED CURRENT READY AGE",
		"no":             "NAME STATUS ROLES AGE VERSION",
		"ns":             "NAME STATUS AGE",
		"po":             "NAME READY STATUS RESTARTS AGE",
	}
	for resource, header := range want {
		out, stderr, err := s.Kubectl(t, "get", resource)
		if err != nil {
			t.Errorf("kubectl get %s: %v\n%s", resource, err, stderr)
			continue
		}
		first := strings.Join(strings.Fields(strings.SplitN(out, "\n", 2)[0]), " ")
		if first != header {
			t.Errorf("kubectl get %s header = %q, want %q", resource, first, header)
		}
	}
	out, _, err := s.Kubectl(t, "get", "svc", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "get svc -o wide", out, "SELECTOR", "app=web")
}

// TestBadInputStoresNothing: malformed YAML and unknown fields give clear errors and leave no object.
func TestBadInputStoresNothing(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	cases := []struct {
		name, manifest string
		wantErr        []string
	}{
		{"malformed yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n spec: [\n", []string{"yaml"}},
		{"unknown field", `
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  selector: {app: web}
  portz: [{port: 80}]
  ports: [{port: 80}]`, []string{"portz"}},
		{"wrong type", `
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: [{port: eighty}]`, []string{"port"}},
	}
	for _, c := range cases {
		for _, mode := range [][]string{{"apply", "-f", "-"}, {"apply", "--server-side", "-f", "-"}, {"create", "-f", "-"}} {
			_, stderr, err := s.KubectlWithInput(t, c.manifest, mode...)
			if err == nil {
				t.Errorf("%s via kubectl %v: accepted", c.name, mode)
				continue
			}
			for _, w := range c.wantErr {
				if !strings.Contains(strings.ToLower(stderr), strings.ToLower(w)) {
					t.Errorf("%s via kubectl %v: error does not mention %q:\n%s", c.name, mode, w, stderr)
				}
			}
		}
	}
	// The server itself rejects an unknown field when asked to be strict (kubectl's default).
	body := `{"apiVersion":"v1","kind":"Service","metadata":{"name":"broken"},"spec":{"portz":[1],"ports":[{"port":80}]}}`
	err := s.Client.CoreV1().RESTClient().Post().Namespace("default").Resource("services").
		Param("fieldValidation", "Strict").Body([]byte(body)).SetHeader("Content-Type", "application/json").
		Do(context.Background()).Error()
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.portz"`) {
		t.Errorf("strict create with an unknown field: want 400 naming spec.portz, got %v", err)
	}
	list, err := s.Client.CoreV1().Services("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range list.Items {
		if svc.Name == "broken" {
			t.Errorf("a rejected Service was stored: %+v", svc)
		}
	}
}

// TestAuthentication: anonymous requests get 401 except on the health and version endpoints.
func TestAuthentication(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	base := "https://127.0.0.1:" + strconv.Itoa(s.Port)
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/api/v1/namespaces", "/apis", "/openapi/v2", "/metrics", "/api/v1/namespaces/default/services"} {
		if code := get(path, ""); code != 401 {
			t.Errorf("anonymous GET %s = %d, want 401", path, code)
		}
		if code := get(path, "not-a-token"); code != 401 {
			t.Errorf("GET %s with a wrong token = %d, want 401", path, code)
		}
		if code := get(path, s.RestConfig.BearerToken); code != 200 {
			t.Errorf("GET %s with the admin token = %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/livez", "/readyz", "/healthz", "/version"} {
		if code := get(path, ""); code != 200 {
			t.Errorf("anonymous GET %s = %d, want 200", path, code)
		}
	}
}

// TestDiscoveryAndOpenAPI checks what kubectl and SSA rely on: discovery of every resource,
// the version, both OpenAPI documents and metrics.
func TestDiscoveryAndOpenAPI(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	out, stderr, err := s.Kubectl(t, "api-resources", "--no-headers")
	if err != nil {
		t.Fatalf("api-resources: %v\n%s", err, stderr)
	}
	for _, want := range []string{"services svc v1 true Service", "endpoints ep v1 true Endpoints",
		"pods po v1 true Pod", "nodes no v1 false Node", "namespaces ns v1 false Namespace",
		"events ev v1 true Event", "endpointslices discovery.k8s.io/v1 true EndpointSlice",
		"deployments deploy apps/v1 true Deployment", "replicasets rs apps/v1 true ReplicaSet",
		"loadbalancerippools lbpool svcplane.io/v1 false LoadBalancerIPPool"} {
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.Join(strings.Fields(line), " ") == want {
				found = true
			}
		}
		if !found {
			t.Errorf("kubectl api-resources lacks %q:\n%s", want, out)
		}
	}
	v, err := s.Client.Discovery().ServerVersion()
	if err != nil || !strings.HasPrefix(v.GitVersion, "v1.37") {
		t.Errorf("/version = %+v, %v; want v1.37.x", v, err)
	}
	raw := s.Client.Discovery().RESTClient()
	ctx := context.Background()
	for path, wants := range map[string][]string{
		"/openapi/v2":                          {`"io.k8s.api.core.v1.Service"`, `"x-kubernetes-group-version-kind"`},
		"/openapi/v3/api/v1":                   {`"io.k8s.api.core.v1.ServiceSpec"`},
		"/openapi/v3/apis/apps/v1":             {`"io.k8s.api.apps.v1.Deployment"`},
		"/openapi/v3/apis/discovery.k8s.io/v1": {`"io.k8s.api.discovery.v1.EndpointSlice"`},
		"/openapi/v3/apis/svcplane.io/v1":      {`"io.svcplane.v1.LoadBalancerIPPool"`, `"x-kubernetes-group-version-kind"`},
		"/metrics":                             {"apiserver_request_total"},
	} {
		body, err := raw.Get().AbsPath(path).DoRaw(ctx)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(body), w) {
				t.Errorf("GET %s lacks %s", path, w)
			}
		}
		if strings.Contains(string(body), "__internal") {
			t.Errorf("GET %s leaks the internal version", path)
		}
	}
	// Aggregated discovery, which newer kubectl asks for.
	body, err := raw.Get().AbsPath("/apis").SetHeader("Accept",
		"application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList").DoRaw(ctx)
	if err != nil || !strings.Contains(string(body), `"APIGroupDiscoveryList"`) || !strings.Contains(string(body), "endpointslices") {
		t.Errorf("aggregated discovery of /apis: %v\n%.300s", err, body)
	}
}

// TestNamespaceDeletionEmptiesIt: deleting a namespace deletes what is in it, then the namespace.
func TestNamespaceDeletionEmptiesIt(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	manifest := `
apiVersion: v1
kind: Namespace
metadata: {name: doomed}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: doomed}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: doomed}
spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: doomed}
spec:
  replicas: 0
  selector: {matchLabels: {app: x}}
  template: {metadata: {labels: {app: x}}, spec: {containers: [{name: c, image: busybox}]}}
`
	if _, stderr, err := s.KubectlWithInput(t, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	if _, stderr, err := s.Kubectl(t, "delete", "namespace", "doomed", "--wait=false"); err != nil {
		t.Fatalf("delete ns: %v\n%s", err, stderr)
	}
	// While it terminates, nothing new may be created in it.
	_, stderr, err := s.KubectlWithInput(t, strings.ReplaceAll(webService, "name: web", "name: late\n  namespace: doomed"), "create", "-f", "-")
	if err == nil || !(strings.Contains(stderr, "being terminated") || strings.Contains(stderr, "not found")) {
		t.Errorf("create in a terminating namespace: want Forbidden, got %v %s", err, stderr)
	}
	ctx := context.Background()
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := s.Client.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
		return isStatus(err, 404, "NotFound"), nil
	}); err != nil {
		ns, _ := s.Client.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
		t.Fatalf("namespace still there after 30s: %+v", ns.Status)
	}
	svcs, _ := s.Client.CoreV1().Services("doomed").List(ctx, metav1.ListOptions{})
	pods, _ := s.Client.CoreV1().Pods("doomed").List(ctx, metav1.ListOptions{})
	if len(svcs.Items)+len(pods.Items) != 0 {
		t.Errorf("objects survived their namespace: %d services, %d pods", len(svcs.Items), len(pods.Items))
	}
	for _, ns := range []string{"default", "kube-system", "kube-public"} {
		_, stderr, err := s.Kubectl(t, "delete", "namespace", ns, "--wait=false")
		if err == nil || !strings.Contains(stderr, "may not be deleted") {
			t.Errorf("deleting %s: want Forbidden, got %v %s", ns, err, stderr)
		}
	}
}
