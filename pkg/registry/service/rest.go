package service

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/util/dryrun"

	"github.com/svcplane/svcplane/pkg/registry/base"
	"github.com/svcplane/svcplane/pkg/registry/service/allocator"
)

// REST is the services storage with allocation: the generic store's BeginCreate, BeginUpdate
// and AfterDelete hooks take and give back cluster IPs and node ports around each write.
type REST struct {
	*base.REST
	set *allocator.Set
}

var (
	_ rest.Updater         = (*REST)(nil)
	_ rest.GracefulDeleter = (*REST)(nil)
	_ rest.Creater         = (*REST)(nil)
)

// NewStores builds the services and services/status storages on d (the Definition, with its
// table and validation filled in by the caller) and, when set is not nil, allocates from it.
func NewStores(opts generic.RESTOptionsGetter, d base.Definition, set *allocator.Set) (map[string]rest.Storage, error) {
	stores, err := base.NewStores(opts, d)
	if err != nil {
		return nil, err
	}
	if set == nil {
		return stores.Map(), nil
	}
	r := &REST{REST: stores.Main, set: set}
	// The status store is a copy made before these hooks are set: status writes keep the spec,
	// so they never allocate.
	r.Store.BeginCreate = r.beginCreate
	r.Store.BeginUpdate = r.beginUpdate
	r.Store.AfterDelete = r.afterDelete
	m := stores.Map()
	m[d.Resource.Resource] = r
	return m, nil
}

// beginCreate runs before the strategy's validation, as upstream's does, so that validation
// sees the allocated IPs and ports; the finish func gives them back if the write fails.
func (r *REST) beginCreate(ctx context.Context, obj runtime.Object, options *metav1.CreateOptions) (genericregistry.FinishFunc, error) {
	t, err := allocateCreate(ctx, r.set, obj.(*corev1.Service), dryrun.IsDryRun(options.DryRun))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, success bool) {
		if !success {
			t.revert(context.WithoutCancel(ctx))
		}
	}, nil
}

type pendingUpdateKey struct{}

// pendingUpdate carries an update's allocations from the store's hook to REST.Update. The store
// calls the hook's finish func with success before etcd has accepted the write, and again for
// each retry after a conflict; so releases wait for the outcome REST.Update sees.
type pendingUpdate struct{ t *txn }

func (r *REST) beginUpdate(ctx context.Context, obj, old runtime.Object, options *metav1.UpdateOptions) (genericregistry.FinishFunc, error) {
	t, err := allocateUpdate(ctx, r.set, obj.(*corev1.Service), old.(*corev1.Service), dryrun.IsDryRun(options.DryRun))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, success bool) {
		ctx = context.WithoutCancel(ctx)
		if !success {
			t.revert(ctx)
			return
		}
		pending, ok := ctx.Value(pendingUpdateKey{}).(*pendingUpdate)
		if !ok {
			t.commit(ctx)
			return
		}
		// An earlier attempt lost a conflict; what it took is not used.
		if pending.t != nil {
			pending.t.revert(ctx)
		}
		pending.t = t
	}, nil
}

// Update is the store's update, with the allocations of the attempt that was stored kept and
// what it dropped released.
func (r *REST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	pending := &pendingUpdate{}
	out, created, err := r.REST.Update(context.WithValue(ctx, pendingUpdateKey{}, pending), name, objInfo, createValidation, updateValidation, forceAllowCreate, options)
	if pending.t != nil {
		if err == nil {
			pending.t.commit(context.WithoutCancel(ctx))
		} else {
			pending.t.revert(context.WithoutCancel(ctx))
		}
	}
	return out, created, err
}

// afterDelete runs once the object is gone from etcd (not when a delete only marks it, e.g.
// while finalizers remain).
func (r *REST) afterDelete(obj runtime.Object, options *metav1.DeleteOptions) {
	if options != nil && dryrun.IsDryRun(options.DryRun) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	releaseAll(ctx, r.set, obj.(*corev1.Service))
}
