// Package claim decides which objects a controller owns, the way upstream's ControllerRefManager
// does: an object whose controller reference names the owner is the owner's while the owner's
// selector still matches it, and is released (its reference removed) when it no longer does; an
// object without a controller that the selector matches is adopted (a controller reference
// added). Objects controlled by someone else are never touched. Both writes are patches with the
// object's UID as precondition, so a recreated object of the same name is left alone.
//
// The ReplicaSet controller claims Pods with it and the Deployment controller ReplicaSets.
package claim

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Owner is the controller object doing the claiming.
type Owner struct {
	Object   metav1.Object
	Kind     schema.GroupVersionKind
	Selector labels.Selector
	// Recheck reads the owner from the API (not a cache) and fails unless it still exists with
	// the same UID and is not being deleted. It runs once, before the first adoption: a cache may
	// still hold an owner that is already gone, and adopting for it would orphan the object again.
	Recheck func(ctx context.Context) error
	// Patch applies a strategic merge patch to the dependent namespace/name.
	Patch func(ctx context.Context, namespace, name string, patch []byte) error

	once       sync.Once
	recheckErr error
}

// ControllerRef is the reference a controller sets on what it owns.
func ControllerRef(owner metav1.Object, kind schema.GroupVersionKind) metav1.OwnerReference {
	yes := true
	return metav1.OwnerReference{
		APIVersion: kind.GroupVersion().String(), Kind: kind.Kind,
		Name: owner.GetName(), UID: owner.GetUID(),
		Controller: &yes, BlockOwnerDeletion: &yes,
	}
}

// Claim returns the objects among candidates that belong to the owner after adopting and
// releasing as needed. Errors of single objects are collected; the others are still claimed.
func Claim[T metav1.Object](ctx context.Context, o *Owner, candidates []T) ([]T, error) {
	var claimed []T
	var errs []error
	for _, obj := range candidates {
		ok, err := o.claimOne(ctx, obj)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			claimed = append(claimed, obj)
		}
	}
	if len(errs) > 0 {
		return claimed, fmt.Errorf("claiming objects for %s/%s: %v", o.Object.GetNamespace(), o.Object.GetName(), errs)
	}
	return claimed, nil
}

func (o *Owner) claimOne(ctx context.Context, obj metav1.Object) (bool, error) {
	matches := o.Selector.Matches(labels.Set(obj.GetLabels()))
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		if ref.UID != o.Object.GetUID() {
			return false, nil
		}
		if matches {
			return true, nil
		}
		// An owner on its way out keeps what it has, so its deletion can cascade to it.
		if o.Object.GetDeletionTimestamp() != nil {
			return false, nil
		}
		return false, o.release(ctx, obj)
	}
	if !matches || o.Object.GetDeletionTimestamp() != nil || obj.GetDeletionTimestamp() != nil {
		return false, nil
	}
	if err := o.adopt(ctx, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func (o *Owner) adopt(ctx context.Context, obj metav1.Object) error {
	o.once.Do(func() {
		if o.Recheck != nil {
			o.recheckErr = o.Recheck(ctx)
		}
	})
	if o.recheckErr != nil {
		return fmt.Errorf("not adopting %s/%s: %w", obj.GetNamespace(), obj.GetName(), o.recheckErr)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []metav1.OwnerReference{ControllerRef(o.Object, o.Kind)},
		"uid":             obj.GetUID(),
	}})
	if err != nil {
		return err
	}
	return o.Patch(ctx, obj.GetNamespace(), obj.GetName(), patch)
}

func (o *Owner) release(ctx context.Context, obj metav1.Object) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"ownerReferences": []map[string]any{{"$patch": "delete", "uid": o.Object.GetUID()}},
		"uid":             obj.GetUID(),
	}})
	if err != nil {
		return err
	}
	err = o.Patch(ctx, obj.GetNamespace(), obj.GetName(), patch)
	// Gone, or replaced by a namesake (the UID precondition fails as Invalid): nothing to release.
	if apierrors.IsNotFound(err) || apierrors.IsInvalid(err) {
		return nil
	}
	return err
}

// RecheckFunc builds Owner.Recheck from a live read of the owner.
func RecheckFunc(owner metav1.Object, get func(ctx context.Context) (metav1.Object, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		fresh, err := get(ctx)
		if err != nil {
			return err
		}
		if fresh.GetUID() != owner.GetUID() {
			return fmt.Errorf("original %s/%s is gone: got uid %v, wanted %v", owner.GetNamespace(), owner.GetName(), fresh.GetUID(), owner.GetUID())
		}
		if fresh.GetDeletionTimestamp() != nil {
			return fmt.Errorf("%s/%s has just been deleted at %v", owner.GetNamespace(), owner.GetName(), fresh.GetDeletionTimestamp())
		}
		return nil
	}
}
