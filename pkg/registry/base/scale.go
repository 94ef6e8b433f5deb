package base

import (
	"context"
	"fmt"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
)

// Scale lets a resource with a replica count serve the /scale subresource: an autoscaling/v1
// Scale (what `kubectl scale` and autoscalers read and write) projected from the object.
type Scale struct {
	// Read returns spec.replicas, status.replicas and the label selector of obj.
	Read func(obj runtime.Object) (specReplicas, statusReplicas int32, selector *metav1.LabelSelector)
	// SetReplicas sets spec.replicas of obj.
	SetReplicas func(obj runtime.Object, replicas int32)
}

// ScaleREST serves get, update and patch of the /scale subresource. Writes go through the main
// store, so the resource's own strategy (generation, validation) applies to the changed object.
type ScaleREST struct {
	store    *genericregistry.Store
	scale    *Scale
	resource schema.GroupResource // e.g. apps "deployments/scale", for error messages
}

var (
	_ rest.Patcher                  = (*ScaleREST)(nil)
	_ rest.GroupVersionKindProvider = (*ScaleREST)(nil)
)

func newScaleREST(store *genericregistry.Store, s *Scale) *ScaleREST {
	r := store.DefaultQualifiedResource
	return &ScaleREST{store: store, scale: s, resource: schema.GroupResource{Group: r.Group, Resource: r.Resource + "/scale"}}
}

// GroupVersionKind tells discovery that this endpoint speaks autoscaling/v1 Scale whatever the
// group of the resource it belongs to.
func (r *ScaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}

func (r *ScaleREST) New() runtime.Object { return &autoscalingv1.Scale{} }

// Destroy does nothing: the main store owns the shared storage.
func (r *ScaleREST) Destroy() {}

func (r *ScaleREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, options)
	if err != nil {
		return nil, err
	}
	return r.toScale(obj)
}

func (r *ScaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	obj, _, err := r.store.Update(ctx, name,
		&scaleUpdate{rest: r, scaleInfo: objInfo},
		r.scaleCreateValidation(createValidation),
		r.scaleUpdateValidation(updateValidation),
		false, options)
	if err != nil {
		return nil, false, err
	}
	scale, err := r.toScale(obj)
	return scale, false, err
}

// toScale projects obj onto a Scale. Its resourceVersion is the object's, so a client that read
// a Scale and writes it back gets a conflict when the object changed in between.
func (r *ScaleREST) toScale(obj runtime.Object) (*autoscalingv1.Scale, error) {
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	spec, status, selector := r.scale.Read(obj)
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid label selector: %v", err))
	}
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{
			Name:              accessor.GetName(),
			Namespace:         accessor.GetNamespace(),
			UID:               accessor.GetUID(),
			ResourceVersion:   accessor.GetResourceVersion(),
			CreationTimestamp: accessor.GetCreationTimestamp(),
		},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: sel.String()},
	}, nil
}

// Admission sees the Scale the client sent, not the object it is projected from.
func (r *ScaleREST) scaleCreateValidation(validate rest.ValidateObjectFunc) rest.ValidateObjectFunc {
	if validate == nil {
		return nil
	}
	return func(ctx context.Context, obj runtime.Object) error {
		scale, err := r.toScale(obj)
		if err != nil {
			return err
		}
		return validate(ctx, scale)
	}
}

func (r *ScaleREST) scaleUpdateValidation(validate rest.ValidateObjectUpdateFunc) rest.ValidateObjectUpdateFunc {
	if validate == nil {
		return nil
	}
	return func(ctx context.Context, obj, old runtime.Object) error {
		scale, err := r.toScale(obj)
		if err != nil {
			return err
		}
		oldScale, err := r.toScale(old)
		if err != nil {
			return err
		}
		return validate(ctx, scale, oldScale)
	}
}

// scaleUpdate turns the Scale a client sent (or patched) into the updated object.
type scaleUpdate struct {
	rest      *ScaleREST
	scaleInfo rest.UpdatedObjectInfo
}

func (u *scaleUpdate) Preconditions() *metav1.Preconditions { return u.scaleInfo.Preconditions() }

func (u *scaleUpdate) UpdatedObject(ctx context.Context, oldObj runtime.Object) (runtime.Object, error) {
	oldMeta, err := meta.Accessor(oldObj)
	if err != nil {
		return nil, err
	}
	// The store hands an empty object when nothing is stored; scale never creates.
	if oldMeta.GetResourceVersion() == "" {
		return nil, apierrors.NewNotFound(u.rest.store.DefaultQualifiedResource, oldMeta.GetName())
	}
	oldScale, err := u.rest.toScale(oldObj)
	if err != nil {
		return nil, err
	}
	obj, err := u.scaleInfo.UpdatedObject(ctx, oldScale)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, apierrors.NewBadRequest("nil update passed to Scale")
	}
	scale, ok := obj.(*autoscalingv1.Scale)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("expected input object type to be Scale, but %T", obj))
	}
	if errs := validateScale(scale); len(errs) > 0 {
		return nil, apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), scale.Name, errs)
	}
	if scale.UID != "" && scale.UID != oldMeta.GetUID() {
		return nil, apierrors.NewConflict(u.rest.resource, scale.Name,
			fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", scale.UID, oldMeta.GetUID()))
	}
	updated := oldObj.DeepCopyObject()
	u.rest.scale.SetReplicas(updated, scale.Spec.Replicas)
	// The Scale's resourceVersion becomes the update's precondition; empty means unconditional.
	newMeta, err := meta.Accessor(updated)
	if err != nil {
		return nil, err
	}
	newMeta.SetResourceVersion(scale.ResourceVersion)
	return updated, nil
}

// validateScale is upstream's autoscaling ValidateScale: the Scale's metadata and a
// non-negative spec.replicas.
func validateScale(scale *autoscalingv1.Scale) field.ErrorList {
	errs := apimachineryvalidation.ValidateObjectMeta(&scale.ObjectMeta, true, apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	errs = append(errs, apimachineryvalidation.ValidateNonnegativeField(int64(scale.Spec.Replicas), field.NewPath("spec", "replicas"))...)
	return errs
}
