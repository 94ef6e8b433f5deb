// Package base is the plumbing every served resource shares: a Definition says what is
// particular to one resource (its names, how spec and status split, its validation), and
// NewStores turns it into the generic registry stores that k8s.io/apiserver serves.
package base

import (
	"context"
	"fmt"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/svcplane/svcplane/pkg/api/scheme"
)

// Definition is what is particular to one resource. Every hook is optional.
type Definition struct {
	// Resource is the group and plural name, e.g. {"", "services"}; Singular its singular name.
	Resource   schema.GroupResource
	Singular   string
	Namespaced bool
	New        func() runtime.Object
	NewList    func() runtime.Object
	// ValidateName checks metadata.name (upstream differs per resource: DNS label, subdomain...).
	ValidateName apimachineryvalidation.ValidateNameFunc
	Table        rest.TableConvertor
	// ShortNames and Categories go into discovery: kubectl resolves "svc" and "all" with them.
	ShortNames []string
	Categories []string

	// Spec and status. When Status is set the resource has a /status subresource: updates of the
	// main resource keep the stored status (KeepStatus) and updates of /status keep everything
	// else (KeepSpec). Both copy from old into obj.
	Status     bool
	KeepStatus func(obj, old runtime.Object)
	KeepSpec   func(obj, old runtime.Object)
	// SpecChanged, when set, makes metadata.generation count changes of the spec.
	SpecChanged func(obj, old runtime.Object) bool

	PrepareForCreate func(ctx context.Context, obj runtime.Object)
	PrepareForUpdate func(ctx context.Context, obj, old runtime.Object)
	Validate         func(ctx context.Context, obj runtime.Object) field.ErrorList
	ValidateUpdate   func(ctx context.Context, obj, old runtime.Object) field.ErrorList
	ValidateStatus   func(ctx context.Context, obj, old runtime.Object) field.ErrorList
	// GracefulDelete, when set, decides whether a delete only marks the object (see
	// rest.RESTGracefulDeleteStrategy); Pods use it so that their agent can stop them first.
	GracefulDelete func(ctx context.Context, obj runtime.Object, options *metav1.DeleteOptions) bool
	// TTLSeconds, when set, makes etcd expire objects (Events).
	TTLSeconds uint64
	// TriggerFields index watchers by these selectable fields (e.g. Pods by spec.nodeName).
	TriggerFields []string
	// Scale, when set, serves the /scale subresource (see scale.go).
	Scale *Scale
	// StatusWritesAnnotations lets /status writes change annotations, as upstream's Deployment
	// status strategy does: its controller records the revision annotation with the status.
	StatusWritesAnnotations bool
}

// apiVersion names the version the reset-field sets apply to, as server-side apply expects.
func (d *Definition) apiVersion() fieldpath.APIVersion {
	if d.Resource.Group == "" {
		return "v1"
	}
	return fieldpath.APIVersion(d.Resource.Group + "/v1")
}

// Stores are the REST storages of one resource: the resource itself and, when it has one, its
// /status subresource.
type Stores struct {
	Main   *REST
	Status *StatusREST
	Scale  *ScaleREST
}

// REST is the storage of a resource itself: the generic store plus what discovery tells about it.
type REST struct {
	*genericregistry.Store
	shortNames, categories []string
}

var (
	_ rest.ShortNamesProvider   = (*REST)(nil)
	_ rest.CategoriesProvider   = (*REST)(nil)
	_ rest.SingularNameProvider = (*REST)(nil)
)

func (r *REST) ShortNames() []string { return r.shortNames }
func (r *REST) Categories() []string { return r.categories }

// NewStores builds and completes the stores of d on the storage optsGetter describes.
func NewStores(optsGetter generic.RESTOptionsGetter, d Definition) (*Stores, error) {
	main := &strategy{ObjectTyper: scheme.Scheme, NameGenerator: names.SimpleNameGenerator, def: &d}
	store := &genericregistry.Store{
		NewFunc:                   d.New,
		NewListFunc:               d.NewList,
		DefaultQualifiedResource:  d.Resource,
		SingularQualifiedResource: schema.GroupResource{Group: d.Resource.Group, Resource: d.Singular},
		PredicateFunc:             matcher,
		CreateStrategy:            main,
		UpdateStrategy:            main,
		DeleteStrategy:            main,
		ResetFieldsStrategy:       main,
		ReturnDeletedObject:       d.GracefulDelete != nil,
		TableConvertor:            d.Table,
	}
	if d.TTLSeconds > 0 {
		store.TTLFunc = func(runtime.Object, uint64, bool) (uint64, error) { return d.TTLSeconds, nil }
	}
	if store.TableConvertor == nil {
		store.TableConvertor = rest.NewDefaultTableConvertor(d.Resource)
	}
	options := &generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: attributes}
	if len(d.TriggerFields) > 0 {
		options.TriggerFunc = storage.IndexerFuncs{}
		for _, f := range d.TriggerFields {
			options.TriggerFunc[f] = func(obj runtime.Object) string { return scheme.FieldSet(obj)[f] }
		}
	}
	if err := store.CompleteWithOptions(options); err != nil {
		return nil, fmt.Errorf("completing the %s store: %w", d.Resource, err)
	}
	stores := &Stores{Main: &REST{Store: store, shortNames: d.ShortNames, categories: d.Categories}}
	if d.Status {
		statusStore := *store
		status := &statusStrategy{strategy: main}
		statusStore.UpdateStrategy = status
		statusStore.ResetFieldsStrategy = status
		stores.Status = &StatusREST{store: &statusStore}
	}
	if d.Scale != nil {
		stores.Scale = newScaleREST(store, d.Scale)
	}
	return stores, nil
}

// attributes returns the labels and selectable fields of obj.
func attributes(obj runtime.Object) (labels.Set, fields.Set, error) {
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil, err
	}
	set := scheme.FieldSet(obj)
	if set == nil {
		set = fields.Set{"metadata.name": accessor.GetName()}
		if ns := accessor.GetNamespace(); ns != "" {
			set["metadata.namespace"] = ns
		}
	}
	return labels.Set(accessor.GetLabels()), set, nil
}

func matcher(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
	return storage.SelectionPredicate{Label: label, Field: field, GetAttrs: attributes}
}

// strategy applies a Definition to creates, updates and deletes of the resource itself.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	def *Definition
}

var (
	_ rest.RESTCreateStrategy         = (*strategy)(nil)
	_ rest.RESTUpdateStrategy         = (*strategy)(nil)
	_ rest.RESTGracefulDeleteStrategy = (*strategy)(nil)
	_ rest.ResetFieldsStrategy        = (*strategy)(nil)
)

func (s *strategy) NamespaceScoped() bool { return s.def.Namespaced }

func (s *strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if s.def.SpecChanged != nil {
		if accessor, err := meta.Accessor(obj); err == nil {
			accessor.SetGeneration(1)
		}
	}
	if s.def.PrepareForCreate != nil {
		s.def.PrepareForCreate(ctx, obj)
	}
}

func (s *strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.def.Status && s.def.KeepStatus != nil {
		s.def.KeepStatus(obj, old)
	}
	if s.def.SpecChanged != nil {
		bumpGeneration(obj, old, s.def.SpecChanged(obj, old))
	}
	if s.def.PrepareForUpdate != nil {
		s.def.PrepareForUpdate(ctx, obj, old)
	}
}

func bumpGeneration(obj, old runtime.Object, changed bool) {
	newMeta, err1 := meta.Accessor(obj)
	oldMeta, err2 := meta.Accessor(old)
	if err1 != nil || err2 != nil {
		return
	}
	newMeta.SetGeneration(oldMeta.GetGeneration())
	if changed {
		newMeta.SetGeneration(oldMeta.GetGeneration() + 1)
	}
}

func (s *strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList {
	accessor, err := meta.Accessor(obj)
	if err != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), err)}
	}
	errs := apimachineryvalidation.ValidateObjectMetaAccessor(accessor, s.def.Namespaced, s.nameValidator(), field.NewPath("metadata"))
	if s.def.Validate != nil {
		errs = append(errs, s.def.Validate(ctx, obj)...)
	}
	return errs
}

func (s *strategy) nameValidator() apimachineryvalidation.ValidateNameFunc {
	if s.def.ValidateName != nil {
		return s.def.ValidateName
	}
	return apimachineryvalidation.NameIsDNSSubdomain
}

func (s *strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	errs := s.validateMetaUpdate(obj, old)
	if s.def.ValidateUpdate != nil {
		errs = append(errs, s.def.ValidateUpdate(ctx, obj, old)...)
	} else if s.def.Validate != nil {
		errs = append(errs, s.def.Validate(ctx, obj)...)
	}
	return errs
}

func (s *strategy) validateMetaUpdate(obj, old runtime.Object) field.ErrorList {
	newMeta, err1 := meta.Accessor(obj)
	oldMeta, err2 := meta.Accessor(old)
	if err1 != nil || err2 != nil {
		return field.ErrorList{field.InternalError(field.NewPath("metadata"), fmt.Errorf("object has no metadata"))}
	}
	return apimachineryvalidation.ValidateObjectMetaAccessorUpdate(newMeta, oldMeta, field.NewPath("metadata"))
}

func (s *strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s *strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (s *strategy) Canonicalize(runtime.Object)                   {}
func (s *strategy) AllowCreateOnUpdate(context.Context) bool      { return false }
func (s *strategy) AllowUnconditionalUpdate(context.Context) bool { return true }

func (s *strategy) CheckGracefulDelete(ctx context.Context, obj runtime.Object, options *metav1.DeleteOptions) bool {
	if s.def.GracefulDelete == nil {
		return false
	}
	return s.def.GracefulDelete(ctx, obj, options)
}

// GetResetFields tells server-side apply which fields a write to this endpoint cannot set.
func (s *strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if !s.def.Status {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		s.def.apiVersion(): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy applies a Definition to updates of the /status subresource.
type statusStrategy struct {
	*strategy
}

func (s *statusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	if s.def.KeepSpec != nil {
		s.def.KeepSpec(obj, old)
	}
	// Status writers (agents, controllers) must not change labels or annotations by accident.
	newMeta, err1 := meta.Accessor(obj)
	oldMeta, err2 := meta.Accessor(old)
	if err1 == nil && err2 == nil {
		newMeta.SetLabels(oldMeta.GetLabels())
		if !s.def.StatusWritesAnnotations {
			newMeta.SetAnnotations(oldMeta.GetAnnotations())
		}
		newMeta.SetGeneration(oldMeta.GetGeneration())
		newMeta.SetFinalizers(oldMeta.GetFinalizers())
		newMeta.SetOwnerReferences(oldMeta.GetOwnerReferences())
	}
}

func (s *statusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	errs := s.validateMetaUpdate(obj, old)
	if s.def.ValidateStatus != nil {
		errs = append(errs, s.def.ValidateStatus(ctx, obj, old)...)
	}
	return errs
}

func (s *statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		s.def.apiVersion(): fieldpath.NewSet(fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata")),
	}
}

// StatusREST serves only get, update and patch of the /status subresource.
type StatusREST struct {
	store *genericregistry.Store
}

var (
	_ rest.Patcher             = (*StatusREST)(nil)
	_ rest.ResetFieldsStrategy = (*StatusREST)(nil)
	_ rest.TableConvertor      = (*StatusREST)(nil)
)

func (r *StatusREST) New() runtime.Object { return r.store.New() }

// Destroy does nothing: the main store owns the shared storage.
func (r *StatusREST) Destroy() {}

func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// Status never creates the object it belongs to.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

func (r *StatusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}

// SpecEqual reports whether two specs are semantically equal; resources use it for SpecChanged.
func SpecEqual(a, b any) bool { return apiequality.Semantic.DeepEqual(a, b) }

// Map returns the storages keyed by their API path ("services", "services/status").
func (s *Stores) Map() map[string]rest.Storage {
	m := map[string]rest.Storage{s.Main.DefaultQualifiedResource.Resource: s.Main}
	if s.Status != nil {
		m[s.Main.DefaultQualifiedResource.Resource+"/status"] = s.Status
	}
	if s.Scale != nil {
		m[s.Main.DefaultQualifiedResource.Resource+"/scale"] = s.Scale
	}
	return m
}
