// Package scheduler binds Pods that have no spec.nodeName to a Node: among the Ready,
// schedulable Nodes whose labels match the Pod's nodeSelector, the one running the fewest Pods
// (ties broken by name). Only Pods for the default scheduler are taken. The binding is an
// update that sets spec.nodeName, which the Pod registry allows exactly once — the pods/binding
// subresource upstream uses would be the same write with its own endpoint.
package scheduler

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/controller"
)

// DefaultSchedulerName is the schedulerName this scheduler answers to.
const DefaultSchedulerName = corev1.DefaultSchedulerName

// retryUnschedulable is how soon a Pod no Node fits is tried again (Node events also retry).
const retryUnschedulable = 5 * time.Second

type scheduler struct {
	client kubernetes.Interface
	pods   corelisters.PodLister
	nodes  corelisters.NodeLister
	synced []cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]

	// assumed counts bindings the informer has not shown yet, so that a burst of Pods is
	// spread instead of all landing on the node that looked emptiest.
	mu      sync.Mutex
	assumed map[string]string // pod key → node
}

// New builds the controller.
func New(c controller.Context) (func(context.Context), error) {
	podInf, nodeInf := c.Informers.Core().V1().Pods(), c.Informers.Core().V1().Nodes()
	s := &scheduler{
		client: c.Client, pods: podInf.Lister(), nodes: nodeInf.Lister(),
		synced:  []cache.InformerSynced{podInf.Informer().HasSynced, nodeInf.Informer().HasSynced},
		assumed: map[string]string{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "scheduler"}),
	}
	onPod := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		key := pod.Namespace + "/" + pod.Name
		if pod.Spec.NodeName != "" {
			s.mu.Lock()
			delete(s.assumed, key)
			s.mu.Unlock()
			return
		}
		if wantsUs(pod) {
			s.queue.Add(key)
		}
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) },
	}); err != nil {
		return nil, err
	}
	// A new or changed Node may fit Pods that waited.
	onNode := func(any) { s.requeuePending() }
	if _, err := nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onNode, UpdateFunc: func(_, o any) { onNode(o) },
	}); err != nil {
		return nil, err
	}
	return s.run, nil
}

func wantsUs(pod *corev1.Pod) bool {
	return pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil &&
		(pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == DefaultSchedulerName) &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

func (s *scheduler) requeuePending() {
	pods, _ := s.pods.List(labels.Everything())
	for _, p := range pods {
		if wantsUs(p) {
			s.queue.Add(p.Namespace + "/" + p.Name)
		}
	}
}

func (s *scheduler) run(ctx context.Context) {
	defer s.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), s.synced...) {
		return
	}
	// One worker: each decision counts the bindings made before it.
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for {
			key, quit := s.queue.Get()
			if quit {
				return
			}
			if err := s.schedule(ctx, key); err != nil {
				klog.V(2).InfoS("not scheduled yet", "pod", key, "reason", err)
				s.queue.AddAfter(key, retryUnschedulable)
			}
			s.queue.Done(key)
		}
	}, time.Second)
	<-ctx.Done()
}

func (s *scheduler) schedule(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := s.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) || (err == nil && !wantsUs(pod)) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, pending := s.assumed[key]
	s.mu.Unlock()
	if pending {
		return nil
	}
	node, err := s.pick(pod)
	if err != nil {
		return err
	}
	bound := pod.DeepCopy()
	bound.Spec.NodeName = node
	if _, err := s.client.CoreV1().Pods(ns).Update(ctx, bound, metav1.UpdateOptions{FieldManager: "svcplane-scheduler"}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("binding to %s: %w", node, err)
	}
	s.mu.Lock()
	s.assumed[key] = node
	s.mu.Unlock()
	klog.V(2).InfoS("scheduled", "pod", key, "node", node)
	return nil
}

// pick chooses the feasible Node with the fewest Pods.
func (s *scheduler) pick(pod *corev1.Pod) (string, error) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return "", err
	}
	pods, err := s.pods.List(labels.Everything())
	if err != nil {
		return "", err
	}
	load := map[string]int{}
	for _, p := range pods {
		if p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			load[p.Spec.NodeName]++
		}
	}
	s.mu.Lock()
	for _, n := range s.assumed {
		load[n]++
	}
	s.mu.Unlock()
	selector := labels.SelectorFromSet(pod.Spec.NodeSelector)
	var fits []string
	for _, n := range nodes {
		if Feasible(n, selector) {
			fits = append(fits, n.Name)
		}
	}
	if len(fits) == 0 {
		return "", fmt.Errorf("0/%d nodes are available (Ready, schedulable and matching nodeSelector %v)", len(nodes), pod.Spec.NodeSelector)
	}
	sort.Slice(fits, func(i, j int) bool {
		if load[fits[i]] != load[fits[j]] {
			return load[fits[i]] < load[fits[j]]
		}
		return fits[i] < fits[j]
	})
	return fits[0], nil
}

// Feasible reports whether node may take new Pods matching selector.
func Feasible(node *corev1.Node, selector labels.Selector) bool {
	if node.Spec.Unschedulable || node.DeletionTimestamp != nil || !selector.Matches(labels.Set(node.Labels)) {
		return false
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
