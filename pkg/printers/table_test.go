package printers

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"
)

// testNow is the clock for every cell test; ago gives timestamps relative to it.
var testNow = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) metav1.Time { return metav1.NewTime(testNow.Add(-d)) }

func objectMeta(name string, age time.Duration) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, CreationTimestamp: ago(age)}
}

func assertCells(t *testing.T, got, want []any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cells\n got: %#v\nwant: %#v", got, want)
	}
}

// headers renders column names the way kubectl prints them.
func headers(columns []metav1.TableColumnDefinition, priority int32) string {
	var names []string
	for _, c := range columns {
		if c.Priority == priority {
			names = append(names, strings.ToUpper(c.Name))
		}
	}
	return strings.Join(names, " ")
}

func TestColumnsMatchUpstreamHeaders(t *testing.T) {
	for _, tc := range []struct {
		resource string
		convert  rest.TableConvertor
		zero     runtime.Object
		headers  string
		wide     string
	}{
		{"services", ForServices(), &corev1.Service{}, "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE", "SELECTOR"},
		{"pods", ForPods(), &corev1.Pod{}, "NAME READY STATUS RESTARTS AGE", "IP NODE NOMINATED NODE READINESS GATES"},
		{"endpoints", ForEndpoints(), &corev1.Endpoints{}, "NAME ENDPOINTS AGE", ""},
		{"endpointslices", ForEndpointSlices(), &discoveryv1.EndpointSlice{}, "NAME ADDRESSTYPE PORTS ENDPOINTS AGE", ""},
		{"nodes", ForNodes(), &corev1.Node{}, "NAME STATUS ROLES AGE VERSION", "INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME"},
		{"namespaces", ForNamespaces(), &corev1.Namespace{}, "NAME STATUS AGE", ""},
		{"events", ForEvents(), &corev1.Event{}, "LAST SEEN TYPE REASON OBJECT MESSAGE", "SUBOBJECT SOURCE FIRST SEEN COUNT NAME"},
		{"deployments", ForDeployments(), &appsv1.Deployment{}, "NAME READY UP-TO-DATE AVAILABLE AGE", "CONTAINERS IMAGES SELECTOR"},
		{"replicasets", ForReplicaSets(), &appsv1.ReplicaSet{}, "NAME DESIRED CURRENT READY AGE", "CONTAINERS IMAGES SELECTOR"},
	} {
		t.Run(tc.resource, func(t *testing.T) {
			table, err := tc.convert.ConvertToTable(context.Background(), tc.zero, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := headers(table.ColumnDefinitions, 0); got != tc.headers {
				t.Errorf("headers %q, want %q", got, tc.headers)
			}
			if got := headers(table.ColumnDefinitions, 1); got != tc.wide {
				t.Errorf("wide headers %q, want %q", got, tc.wide)
			}
			for _, c := range table.ColumnDefinitions {
				if c.Type == "" || c.Description == "" {
					t.Errorf("column %q lacks a type or description: %+v", c.Name, c)
				}
				if (c.Name == "Name") != (c.Format == "name") {
					t.Errorf("column %q has format %q; only Name is formatted as a name", c.Name, c.Format)
				}
			}
			// The server always sends wide cells; kubectl drops them by priority.
			if len(table.Rows) != 1 || len(table.Rows[0].Cells) != len(table.ColumnDefinitions) {
				t.Errorf("want one row with a cell per column (%d), got %+v", len(table.ColumnDefinitions), table.Rows)
			}
		})
	}
}

func TestListTable(t *testing.T) {
	remaining := int64(7)
	list := &corev1.ServiceList{
		ListMeta: metav1.ListMeta{ResourceVersion: "42", Continue: "next-page", RemainingItemCount: &remaining},
		Items: []corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.1"}},
			{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.2"}},
		},
	}

	t.Run("list meta and one row per item in order", func(t *testing.T) {
		table, err := ForServices().ConvertToTable(context.Background(), list, &metav1.TableOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if table.ResourceVersion != "42" || table.Continue != "next-page" || table.RemainingItemCount == nil || *table.RemainingItemCount != 7 {
			t.Errorf("list meta not carried over: %+v", table.ListMeta)
		}
		if len(table.ColumnDefinitions) != 7 {
			t.Errorf("want 7 column definitions, got %d", len(table.ColumnDefinitions))
		}
		if len(table.Rows) != 2 {
			t.Fatalf("want 2 rows, got %d", len(table.Rows))
		}
		for i, row := range table.Rows {
			if row.Cells[0] != list.Items[i].Name {
				t.Errorf("row %d is %v, want %s", i, row.Cells[0], list.Items[i].Name)
			}
			if row.Object.Object != &list.Items[i] {
				t.Errorf("row %d object is %p, want the list item %p", i, row.Object.Object, &list.Items[i])
			}
		}
	})

	t.Run("NoHeaders omits column definitions", func(t *testing.T) {
		table, err := ForServices().ConvertToTable(context.Background(), list, &metav1.TableOptions{NoHeaders: true})
		if err != nil {
			t.Fatal(err)
		}
		if table.ColumnDefinitions != nil {
			t.Errorf("want no column definitions, got %d", len(table.ColumnDefinitions))
		}
		if len(table.Rows) != 2 {
			t.Errorf("want 2 rows, got %d", len(table.Rows))
		}
	})

	t.Run("empty list encodes rows as an empty array", func(t *testing.T) {
		table, err := ForServices().ConvertToTable(context.Background(), &corev1.ServiceList{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := json.Marshal(table)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `"rows":[]`) {
			t.Errorf("want rows as [], got %s", out)
		}
	})
}

func TestSingleObjectTable(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", ResourceVersion: "9"}}

	t.Run("carries the object's resourceVersion and the object itself", func(t *testing.T) {
		table, err := ForServices().ConvertToTable(context.Background(), svc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if table.ResourceVersion != "9" {
			t.Errorf("resourceVersion %q, want 9", table.ResourceVersion)
		}
		if len(table.Rows) != 1 || table.Rows[0].Object.Object != svc {
			t.Errorf("want one row holding the service, got %+v", table.Rows)
		}
	})

	t.Run("another type is refused", func(t *testing.T) {
		if _, err := ForServices().ConvertToTable(context.Background(), &corev1.Pod{}, nil); err == nil {
			t.Error("want an error printing a Pod with the Service printer")
		}
		if _, err := ForServices().ConvertToTable(context.Background(), &corev1.PodList{Items: []corev1.Pod{{}}}, nil); err == nil {
			t.Error("want an error printing a PodList with the Service printer")
		}
	})

	t.Run("unknown table options are refused", func(t *testing.T) {
		if _, err := ForServices().ConvertToTable(context.Background(), svc, &metav1.ListOptions{}); err == nil {
			t.Error("want an error for ListOptions as table options")
		}
	})
}

func TestAge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		created metav1.Time
		want    string
	}{
		{"unset creation time is unknown", metav1.Time{}, "<unknown>"},
		{"seconds under two minutes", ago(90 * time.Second), "90s"},
		{"minutes and seconds under ten minutes", ago(5*time.Minute + 3*time.Second), "5m3s"},
		{"days", ago(49 * time.Hour), "2d1h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := since(tc.created, testNow); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("convertor ages rows from the current time", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", CreationTimestamp: metav1.NewTime(time.Now().Add(-3 * time.Hour))}}
		table, err := ForNamespaces().ConvertToTable(context.Background(), ns, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := table.Rows[0].Cells[2]; got != "3h" {
			t.Errorf("age %v, want 3h", got)
		}
	})
}
