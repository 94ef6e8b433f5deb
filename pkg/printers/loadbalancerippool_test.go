package printers

import (
	"reflect"
	"testing"
	"time"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

func TestLoadBalancerIPPoolTable(t *testing.T) {
	c := ForLoadBalancerIPPools().(*tableConvertor[*svcplanev1.LoadBalancerIPPool])
	c.now = func() time.Time { return testNow }
	pool := &svcplanev1.LoadBalancerIPPool{
		ObjectMeta: objectMeta("default", 2*time.Hour),
		Spec:       svcplanev1.LoadBalancerIPPoolSpec{Addresses: []string{"10.251.0.0/24", "fd00:251::10-fd00:251::20"}},
		Status:     svcplanev1.LoadBalancerIPPoolStatus{Assigned: 3, Available: 268},
	}
	list := &svcplanev1.LoadBalancerIPPoolList{Items: []svcplanev1.LoadBalancerIPPool{*pool}}
	table, err := c.ConvertToTable(t.Context(), list, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, col := range table.ColumnDefinitions {
		names = append(names, col.Name)
	}
	if want := []string{"Name", "Addresses", "Assigned", "Available", "Age"}; !reflect.DeepEqual(names, want) {
		t.Errorf("columns = %v, want %v", names, want)
	}
	want := []any{"default", "10.251.0.0/24,fd00:251::10-fd00:251::20", int64(3), int64(268), "120m"}
	if got := table.Rows[0].Cells; !reflect.DeepEqual(got, want) {
		t.Errorf("cells = %#v, want %#v", got, want)
	}
}
