// Package namespacelifecycle is upstream's NamespaceLifecycle admission rule: nothing is
// created in a namespace that does not exist or is being terminated, and the namespaces the
// cluster itself needs cannot be deleted.
package namespacelifecycle

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Immortal lists the namespaces that may not be deleted.
var Immortal = []string{metav1.NamespaceDefault, metav1.NamespaceSystem, metav1.NamespacePublic}

// recentDeletionWindow is how long a namespace just deleted is looked up live instead of in
// the cache, so a create racing the deletion sees it terminating.
const recentDeletionWindow = 10 * time.Second

// Lifecycle is the admission plugin.
type Lifecycle struct {
	*admission.Handler
	client   kubernetes.Interface
	lister   corelisters.NamespaceLister
	synced   cache.InformerSynced
	mu       sync.Mutex
	recently map[string]time.Time
}

var _ admission.ValidationInterface = (*Lifecycle)(nil)

// New returns the plugin reading namespaces from informer, and from client when the cache may be stale.
func New(client kubernetes.Interface, informer cache.SharedIndexInformer) *Lifecycle {
	return &Lifecycle{
		Handler:  admission.NewHandler(admission.Create, admission.Update, admission.Delete),
		client:   client,
		lister:   corelisters.NewNamespaceLister(informer.GetIndexer()),
		synced:   informer.HasSynced,
		recently: map[string]time.Time{},
	}
}

var namespaceKind = corev1.SchemeGroupVersion.WithKind("Namespace").GroupKind()

// Validate implements admission.ValidationInterface.
func (l *Lifecycle) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	isNamespace := a.GetKind().GroupKind() == namespaceKind && a.GetSubresource() == ""
	if a.GetOperation() == admission.Delete {
		if isNamespace {
			if slices.Contains(Immortal, a.GetName()) {
				return apierrors.NewForbidden(a.GetResource().GroupResource(), a.GetName(), fmt.Errorf("this namespace may not be deleted"))
			}
			l.mu.Lock()
			l.recently[a.GetName()] = time.Now()
			l.mu.Unlock()
		}
		return nil
	}
	if a.GetNamespace() == "" || a.GetKind().GroupKind() == namespaceKind {
		return nil
	}
	ns, err := l.lookup(ctx, a.GetNamespace(), a.GetOperation() == admission.Create)
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(corev1.Resource("namespaces"), a.GetNamespace())
	}
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if a.GetOperation() != admission.Create || ns.Status.Phase != corev1.NamespaceTerminating {
		return nil
	}
	forbidden := admission.NewForbidden(a, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", a.GetNamespace()))
	if statusErr, ok := forbidden.(*apierrors.StatusError); ok && statusErr.ErrStatus.Details != nil {
		statusErr.ErrStatus.Details.Causes = append(statusErr.ErrStatus.Details.Causes, metav1.StatusCause{
			Type:    corev1.NamespaceTerminatingCause,
			Message: fmt.Sprintf("namespace %s is being terminated", a.GetNamespace()),
			Field:   "metadata.namespace",
		})
	}
	return forbidden
}

// lookup reads the namespace from the cache, or live when the cache is not synced, misses it on
// a create, or the namespace was deleted moments ago.
func (l *Lifecycle) lookup(ctx context.Context, name string, create bool) (*corev1.Namespace, error) {
	live := !l.synced()
	l.mu.Lock()
	if at, ok := l.recently[name]; ok {
		if time.Since(at) < recentDeletionWindow {
			live = true
		} else {
			delete(l.recently, name)
		}
	}
	l.mu.Unlock()
	if !live {
		ns, err := l.lister.Get(name)
		if err == nil || !apierrors.IsNotFound(err) || !create {
			return ns, err
		}
	}
	return l.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}
