package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/svcplane/svcplane/test/testserver"
)

// resourceCase is one served resource with a minimal valid object of it.
type resourceCase struct {
	gvr        schema.GroupVersionResource
	namespaced bool
	manifest   string
	// status is a merge into the object's status that the /status subresource must keep, or ""
	// when the resource has no status subresource.
	status string
	// controlled resources are also written by a controller (Pods by the scheduler, Nodes by
	// node IPAM, apps by their controllers), so the test retries on conflicts and accepts newer
	// resourceVersions than its own writes.
	controlled bool
}

func servedResources() []resourceCase {
	core := func(r string) schema.GroupVersionResource {
		return schema.GroupVersionResource{Version: "v1", Resource: r}
	}
	return []resourceCase{
		{gvr: core("namespaces"), manifest: `
apiVersion: v1
kind: Namespace
metadata: {name: crud-namespace}`},
		{gvr: core("services"), namespaced: true, status: `{"conditions":[{"type":"Ready","status":"True","reason":"Tested","message":"set through /status","lastTransitionTime":"2026-11-24T12:00:00Z"}]}`, manifest: `
apiVersion: v1
kind: Service
metadata: {name: crud-service}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]`},
		{gvr: core("endpoints"), namespaced: true, manifest: `
apiVersion: v1
kind: Endpoints
metadata: {name: crud-endpoints}
subsets:
- addresses: [{ip: 10.244.1.5}]
  ports: [{port: 80}]`},
		{gvr: core("pods"), namespaced: true, controlled: true, status: `{"phase":"Running","podIP":"10.244.1.7","podIPs":[{"ip":"10.244.1.7"}]}`, manifest: `
apiVersion: v1
kind: Pod
metadata: {name: crud-pod, labels: {app: web}}
spec:
  containers: [{name: web, image: busybox, ports: [{name: http, containerPort: 8080}]}]`},
		{gvr: core("nodes"), controlled: true, status: `{"addresses":[{"type":"InternalIP","address":"10.250.0.11"}]}`, manifest: `
apiVersion: v1
kind: Node
metadata: {name: crud-node}`},
		{gvr: core("events"), namespaced: true, manifest: `
apiVersion: v1
kind: Event
metadata: {name: crud-event}
involvedObject: {kind: Service, name: crud-service, namespace: default}
reason: Testing
message: an event
type: Normal`},
		{gvr: schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}, namespaced: true, manifest: `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: crud-slice, labels: {kubernetes.io/service-name: crud-service}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}]
ports: [{name: "", port: 80, protocol: TCP}]`},
		{gvr: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, namespaced: true, controlled: true, status: `{"observedGeneration":1}`, manifest: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: crud-deployment}
spec:
  replicas: 0
  selector: {matchLabels: {app: crud}}
  template:
    metadata: {labels: {app: crud}}
    spec: {containers: [{name: web, image: busybox}]}`},
		{gvr: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}, namespaced: true, controlled: true, status: `{"observedGeneration":1}`, manifest: `
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: crud-replicaset}
spec:
  replicas: 0
  selector: {matchLabels: {app: crud-rs}}
  template:
    metadata: {labels: {app: crud-rs}}
    spec: {containers: [{name: web, image: busybox}]}`},
		{gvr: schema.GroupVersionResource{Group: "svcplane.io", Version: "v1", Resource: "loadbalancerippools"}, controlled: true, status: `{"assigned":0,"available":14}`, manifest: `
apiVersion: svcplane.io/v1
kind: LoadBalancerIPPool
metadata: {name: crud-pool}
spec:
  addresses: [10.252.0.0/28]`},
	}
}

// endpointsOwner is the selectorless Service the hand-made Endpoints belong to: like upstream's,
// our endpoints controller deletes Endpoints whose Service does not exist.
const endpointsOwner = `
apiVersion: v1
kind: Service
metadata: {name: crud-endpoints}
spec:
  ports: [{port: 80}]`

func decodeManifest(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	return obj
}

// TestEveryResourceRoundTrips drives each served resource through the whole client-go life cycle:
// create, get, list, watch, the four patch types, update, the status subresource and delete.
func TestEveryResourceRoundTrips(t *testing.T) {
	s := testserver.Start(t, testserver.Options{})
	dyn := dynamic.NewForConfigOrDie(s.RestConfig)
	if _, stderr, err := s.KubectlWithInput(t, endpointsOwner, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, stderr)
	}
	for _, rc := range servedResources() {
		t.Run(rc.gvr.Resource, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var client dynamic.ResourceInterface = dyn.Resource(rc.gvr)
			if rc.namespaced {
				client = dyn.Resource(rc.gvr).Namespace("default")
			}
			want := decodeManifest(t, rc.manifest)
			name := want.GetName()

			list, err := client.List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			w, err := client.Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion(), FieldSelector: "metadata.name=" + name})
			if err != nil {
				t.Fatalf("watch: %v", err)
			}
			defer w.Stop()

			created, err := client.Create(ctx, want, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if created.GetUID() == "" || created.GetResourceVersion() == "" || created.GetCreationTimestamp().Time.IsZero() {
				t.Fatalf("create returned no uid/resourceVersion/creationTimestamp: %v", created.Object["metadata"])
			}
			if _, err := client.Create(ctx, want, metav1.CreateOptions{}); !isStatus(err, 409, "AlreadyExists") {
				t.Errorf("second create: want 409 AlreadyExists, got %v", err)
			}
			got, err := client.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if rv, want := mustAtoi(t, got.GetResourceVersion()), mustAtoi(t, created.GetResourceVersion()); rv != want && !(rc.controlled && rv > want) {
				t.Fatalf("get: resourceVersion %d, want %d", rv, want)
			}
			list, err = client.List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
			if err != nil || len(list.Items) != 1 {
				t.Fatalf("list by name: %v, %d items", err, len(list.Items))
			}

			patches := []struct {
				pt    types.PatchType
				label string
				body  string
			}{
				{types.JSONPatchType, "json", `[{"op":"add","path":"/metadata/labels","value":{"json":"yes"}}]`},
				{types.MergePatchType, "merge", `{"metadata":{"labels":{"merge":"yes"}}}`},
				{types.StrategicMergePatchType, "strategic", `{"metadata":{"labels":{"strategic":"yes"}}}`},
				{types.ApplyPatchType, "apply", fmt.Sprintf(`{"apiVersion":%q,"kind":%q,"metadata":{"name":%q,"labels":{"apply":"yes"}}}`,
					want.GetAPIVersion(), want.GetKind(), name)},
			}
			for _, p := range patches {
				opts := metav1.PatchOptions{}
				if p.pt == types.ApplyPatchType {
					opts.FieldManager, opts.Force = "e2e-test", ptr(true)
				}
				if _, err := client.Patch(ctx, name, p.pt, []byte(p.body), opts); err != nil {
					t.Fatalf("%s patch: %v", p.label, err)
				}
			}
			got, err = client.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range patches {
				if got.GetLabels()[p.label] != "yes" {
					t.Errorf("after all patches the %s label is missing: %v", p.label, got.GetLabels())
				}
			}
			if !hasManager(got, "e2e-test") {
				t.Errorf("server-side apply did not record the field manager: %v", got.GetManagedFields())
			}

			got.SetAnnotations(map[string]string{"updated": "yes"})
			updated, err := client.Update(ctx, got, metav1.UpdateOptions{})
			for attempt := 0; rc.controlled && isStatus(err, 409, "Conflict") && attempt < 5; attempt++ {
				if got, err = client.Get(ctx, name, metav1.GetOptions{}); err != nil {
					t.Fatal(err)
				}
				got.SetAnnotations(map[string]string{"updated": "yes"})
				updated, err = client.Update(ctx, got, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			if updated.GetResourceVersion() == got.GetResourceVersion() {
				t.Errorf("update did not change resourceVersion")
			}
			if _, err := client.Update(ctx, got, metav1.UpdateOptions{}); !isStatus(err, 409, "Conflict") {
				t.Errorf("update with a stale resourceVersion: want 409 Conflict, got %v", err)
			}

			if rc.status != "" && !rc.controlled {
				checkStatusSubresource(ctx, t, client, updated, rc.status)
			}
			if rc.controlled {
				// The controller owns the status of these; the test only proves /status is
				// served and that a main-resource update does not wipe the status.
				if _, err := client.Get(ctx, name, metav1.GetOptions{}, "status"); err != nil {
					t.Errorf("get /status: %v", err)
				}
				if st, ok, _ := unstructured.NestedMap(updated.Object, "status"); !ok || len(st) == 0 {
					t.Errorf("after a main-resource update the status is empty")
				}
			}

			if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete: %v", err)
			}
			// Namespaces finalize asynchronously (the namespace controller empties them first).
			if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				_, err := client.Get(ctx, name, metav1.GetOptions{})
				return isStatus(err, 404, "NotFound"), nil
			}); err != nil {
				t.Fatalf("%s still exists after delete", name)
			}

			seen := watchedTypes(t, w, watch.Deleted)
			if seen[0] != watch.Added || seen[len(seen)-1] != watch.Deleted || len(seen) < 2+len(patches) {
				t.Errorf("watch saw %v; want ADDED, a MODIFIED for each change, DELETED", seen)
			}
		})
	}
}

// checkStatusSubresource sets status through /status and proves each endpoint keeps to its half:
// /status ignores spec changes, the main resource ignores status changes.
func checkStatusSubresource(ctx context.Context, t *testing.T, client dynamic.ResourceInterface, obj *unstructured.Unstructured, status string) {
	t.Helper()
	var wantStatus map[string]any
	if err := json.Unmarshal([]byte(status), &wantStatus); err != nil {
		t.Fatal(err)
	}
	obj = obj.DeepCopy()
	for k, v := range wantStatus {
		if err := unstructured.SetNestedField(obj.Object, v, "status", k); err != nil {
			t.Fatal(err)
		}
	}
	obj.SetLabels(map[string]string{"via-status": "yes"})
	afterStatus, err := client.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status: %v", err)
	}
	for k, v := range wantStatus {
		got, _, _ := unstructured.NestedFieldNoCopy(afterStatus.Object, "status", k)
		if !jsonEqual(got, v) {
			t.Errorf("status.%s after /status update = %v, want %v", k, got, v)
		}
	}
	if afterStatus.GetLabels()["via-status"] == "yes" {
		t.Errorf("an update through /status changed metadata.labels")
	}

	cleared := afterStatus.DeepCopy()
	unstructured.RemoveNestedField(cleared.Object, "status")
	afterMain, err := client.Update(ctx, cleared, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update without status: %v", err)
	}
	for k, v := range wantStatus {
		got, _, _ := unstructured.NestedFieldNoCopy(afterMain.Object, "status", k)
		if !jsonEqual(got, v) {
			t.Errorf("a main-resource update changed status.%s to %v", k, got)
		}
	}
}

func watchedTypes(t *testing.T, w watch.Interface, last watch.EventType) []watch.EventType {
	t.Helper()
	var seen []watch.EventType
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return append(seen, "closed")
			}
			seen = append(seen, ev.Type)
			if ev.Type == last {
				return seen
			}
		case <-timeout:
			return append(seen, "timeout")
		}
	}
}

func hasManager(obj *unstructured.Unstructured, manager string) bool {
	for _, m := range obj.GetManagedFields() {
		if m.Manager == manager && m.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func ptr[T any](v T) *T { return &v }

// isStatus reports whether err is an API error with this code and reason.
func isStatus(err error, code int32, reason string) bool {
	if err == nil {
		return false
	}
	type apiStatus interface{ Status() metav1.Status }
	st, ok := err.(apiStatus)
	if !ok {
		return false
	}
	return st.Status().Code == code && string(st.Status().Reason) == reason
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}
