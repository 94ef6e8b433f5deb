// Package loadbalancerippool stores LoadBalancerIPPools (svcplane.io/v1): cluster-scoped address
// ranges the loadbalancer controller assigns to LoadBalancer Services; the controller writes the
// status counts.
package loadbalancerippool

import (
	"context"
	"fmt"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/svcplane/svcplane/pkg/api/validation"
	svcplanev1 "github.com/svcplane/svcplane/pkg/apis/svcplane/v1"
	"github.com/svcplane/svcplane/pkg/registry/base"
)

// NewStores returns the stores of the loadbalancerippools resource (and its /status).
//
// Validation compares a pool with every other stored pool so that overlaps are refused with a
// 422. Two overlapping pools created at the same instant can both pass (no lock spans the check
// and the write); the controller then tolerates the overlap by trying pools in name order.
func NewStores(opts generic.RESTOptionsGetter, table rest.TableConvertor) (*base.Stores, error) {
	var stores *base.Stores
	others := func(ctx context.Context) ([]svcplanev1.LoadBalancerIPPool, error) {
		list, err := stores.Main.List(ctx, &metainternalversion.ListOptions{})
		if err != nil {
			return nil, err
		}
		return list.(*svcplanev1.LoadBalancerIPPoolList).Items, nil
	}
	validate := func(ctx context.Context, obj runtime.Object) field.ErrorList {
		pools, err := others(ctx)
		if err != nil {
			return field.ErrorList{field.InternalError(field.NewPath("spec", "addresses"), fmt.Errorf("listing the other pools: %w", err))}
		}
		return validation.ValidateLoadBalancerIPPool(obj.(*svcplanev1.LoadBalancerIPPool), pools)
	}
	d := base.Definition{
		Resource: svcplanev1.Resource("loadbalancerippools"),
		Singular: "loadbalancerippool",
		// lbpool, as kubectl users would abbreviate it; "ippool" is taken by Calico.
		ShortNames: []string{"lbpool"},
		New:        func() runtime.Object { return &svcplanev1.LoadBalancerIPPool{} },
		NewList:    func() runtime.Object { return &svcplanev1.LoadBalancerIPPoolList{} },
		Table:      table,
		Status:     true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			obj.(*svcplanev1.LoadBalancerIPPool).Status = svcplanev1.LoadBalancerIPPoolStatus{}
		},
		KeepStatus: func(obj, old runtime.Object) {
			obj.(*svcplanev1.LoadBalancerIPPool).Status = old.(*svcplanev1.LoadBalancerIPPool).Status
		},
		KeepSpec: func(obj, old runtime.Object) {
			obj.(*svcplanev1.LoadBalancerIPPool).Spec = old.(*svcplanev1.LoadBalancerIPPool).Spec
		},
		SpecChanged: func(obj, old runtime.Object) bool {
			return !base.SpecEqual(obj.(*svcplanev1.LoadBalancerIPPool).Spec, old.(*svcplanev1.LoadBalancerIPPool).Spec)
		},
		Validate: validate,
		ValidateStatus: func(_ context.Context, obj, _ runtime.Object) field.ErrorList {
			return validation.ValidateLoadBalancerIPPoolStatus(obj.(*svcplanev1.LoadBalancerIPPool))
		},
	}
	var err error
	stores, err = base.NewStores(opts, d)
	return stores, err
}
