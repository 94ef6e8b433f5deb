package printers

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/registry/rest"

	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
)

// ForLoadBalancerIPPools prints svcplane.io/v1 LoadBalancerIPPools:
// NAME ADDRESSES ASSIGNED AVAILABLE AGE. The counts come from the status the loadbalancer
// controller writes, so a pool nobody has counted yet shows 0 and 0.
func ForLoadBalancerIPPools() rest.TableConvertor {
	return newTableConvertor(
		[]metav1.TableColumnDefinition{
			nameColumn(),
			column("Addresses", "string", "The CIDRs and ranges of the pool."),
			column("Assigned", "integer", "Addresses held by at least one Service."),
			column("Available", "integer", "Addresses free to assign."),
			ageColumn(),
		},
		func(pool *svcplanev1.LoadBalancerIPPool, now time.Time) []any {
			return []any{
				pool.Name,
				orNone(strings.Join(pool.Spec.Addresses, ",")),
				pool.Status.Assigned,
				pool.Status.Available,
				since(pool.CreationTimestamp, now),
			}
		},
	)
}
