// Package namespace stores Namespaces with upstream's two-step deletion: DELETE marks the
// namespace Terminating; the namespace controller empties it and clears spec.finalizers through
// /finalize; the DELETE after that removes it.
package namespace

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"

	"github.com/svcplane/svcplane/pkg/registry/base"
)

// Definition describes the namespaces resource.
func Definition() base.Definition {
	return base.Definition{
		Resource:     corev1.Resource("namespaces"),
		Singular:     "namespace",
		New:          func() runtime.Object { return &corev1.Namespace{} },
		NewList:      func() runtime.Object { return &corev1.NamespaceList{} },
		ValidateName: apimachineryvalidation.ValidateNamespaceName,
		ShortNames:   []string{"ns"},
		Status:       true,
		PrepareForCreate: func(_ context.Context, obj runtime.Object) {
			ns := obj.(*corev1.Namespace)
			ns.Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
			if !slices.Contains(ns.Spec.Finalizers, corev1.FinalizerKubernetes) {
				ns.Spec.Finalizers = append(ns.Spec.Finalizers, corev1.FinalizerKubernetes)
			}
		},
		// spec.finalizers changes only through /finalize, so a plain update keeps it.
		KeepStatus: func(obj, old runtime.Object) {
			ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
			ns.Status = oldNS.Status
			ns.Spec.Finalizers = oldNS.Spec.Finalizers
		},
		KeepSpec: func(obj, old runtime.Object) { obj.(*corev1.Namespace).Spec = old.(*corev1.Namespace).Spec },
		Validate: func(_ context.Context, obj runtime.Object) field.ErrorList {
			return validateFinalizers(obj.(*corev1.Namespace))
		},
	}
}

func validateFinalizers(ns *corev1.Namespace) field.ErrorList {
	var errs field.ErrorList
	for i, f := range ns.Spec.Finalizers {
		errs = append(errs, apimachineryvalidation.ValidateFinalizerName(string(f), field.NewPath("spec", "finalizers").Index(i))...)
	}
	return errs
}

// REST is the namespaces storage with upstream's deletion.
type REST struct {
	*base.REST
}

// NewREST returns the storage for namespaces, namespaces/status and namespaces/finalize.
func NewREST(optsGetter generic.RESTOptionsGetter, table rest.TableConvertor) (map[string]rest.Storage, error) {
	d := Definition()
	d.Table = table
	stores, err := base.NewStores(optsGetter, d)
	if err != nil {
		return nil, err
	}
	finalize := *stores.Main.Store
	finalize.UpdateStrategy = finalizeStrategy{RESTUpdateStrategy: stores.Main.UpdateStrategy}
	finalize.ResetFieldsStrategy = nil
	return map[string]rest.Storage{
		"namespaces":          &REST{REST: stores.Main},
		"namespaces/status":   stores.Status,
		"namespaces/finalize": &FinalizeREST{store: &finalize},
	}, nil
}

// Delete marks the namespace Terminating; it removes the object only once spec.finalizers is empty.
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	obj, err := r.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	ns := obj.(*corev1.Namespace)
	if options == nil {
		options = metav1.NewDeleteOptions(0)
	}
	if options.Preconditions == nil {
		options.Preconditions = &metav1.Preconditions{}
	}
	if options.Preconditions.UID == nil {
		options.Preconditions.UID = &ns.UID
	} else if *options.Preconditions.UID != ns.UID {
		return nil, false, apierrors.NewConflict(corev1.Resource("namespaces"), name,
			fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", *options.Preconditions.UID, ns.UID))
	}
	if rv := options.Preconditions.ResourceVersion; rv != nil && *rv != ns.ResourceVersion {
		return nil, false, apierrors.NewConflict(corev1.Resource("namespaces"), name,
			fmt.Errorf("precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *rv, ns.ResourceVersion))
	}

	if ns.DeletionTimestamp.IsZero() {
		if err := deleteValidation(ctx, ns); err != nil {
			return nil, false, err
		}
		key, err := r.KeyFunc(ctx, name)
		if err != nil {
			return nil, false, err
		}
		marked := &corev1.Namespace{}
		err = r.Storage.GuaranteedUpdate(ctx, key, marked, false, storage.NewUIDPreconditions(string(ns.UID)),
			storage.SimpleUpdate(func(existing runtime.Object) (runtime.Object, error) {
				current := existing.(*corev1.Namespace)
				if current.DeletionTimestamp.IsZero() {
					now := metav1.Now()
					current.DeletionTimestamp = &now
				}
				current.Status.Phase = corev1.NamespaceTerminating
				return current, nil
			}), isDryRun(options), nil)
		if err != nil {
			return nil, false, err
		}
		ns = marked
	}
	if len(ns.Spec.Finalizers) > 0 || len(ns.Finalizers) > 0 {
		return ns, false, nil
	}
	return r.Store.Delete(ctx, name, deleteValidation, options)
}

func isDryRun(options *metav1.DeleteOptions) bool {
	return slices.Contains(options.DryRun, metav1.DryRunAll)
}

// finalizeStrategy lets an update change only spec.finalizers.
type finalizeStrategy struct {
	rest.RESTUpdateStrategy
}

func (finalizeStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	ns, oldNS := obj.(*corev1.Namespace), old.(*corev1.Namespace)
	finalizers := ns.Spec.Finalizers
	*ns = *oldNS.DeepCopy()
	ns.Spec.Finalizers = finalizers
}

func (finalizeStrategy) ValidateUpdate(_ context.Context, obj, _ runtime.Object) field.ErrorList {
	return validateFinalizers(obj.(*corev1.Namespace))
}

// FinalizeREST serves the namespaces/finalize subresource: update only.
type FinalizeREST struct {
	store *genericregistry.Store
}

func (r *FinalizeREST) New() runtime.Object { return &corev1.Namespace{} }

// Destroy does nothing: the main store owns the shared storage.
func (r *FinalizeREST) Destroy() {}

func (r *FinalizeREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
