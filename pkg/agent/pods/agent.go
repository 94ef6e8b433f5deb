// Package pods is the node agent's Pod manager, a small kubelet: it watches the Pods bound to
// its node, runs each as processes in a network namespace of its own (packages runtime and
// netns), probes them, and writes their status back to the API. Pods deleted gracefully are
// stopped (SIGTERM, grace, SIGKILL) and then removed with grace 0. What it runs is recorded
// under the data directory, so a restarted agent adopts running Pods instead of restarting them.
package pods

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/agent/netns"
	"github.com/svcplane/svcplane/pkg/agent/runtime"
)

// Config is what the agent is built from.
type Config struct {
	NodeName string
	// NodeIPs are the node's addresses (at least one; one per IP family at most), primary
	// first: the Pods' status.hostIPs (status.hostIP is the first).
	NodeIPs []netip.Addr
	// DataDir keeps Pod records, logs and resolv.conf files.
	DataDir string
	Client  kubernetes.Interface
	Network *netns.Network
	Runtime *runtime.Runtime
	// TestServer is the argv prefix of the built-in test server (svcplane testserver).
	TestServer []string
	// ClusterDNS is the nameserver of Pods with dnsPolicy ClusterFirst; ClusterDomain their
	// search suffix.
	ClusterDNS    string
	ClusterDomain string
	// HostResolvConf is the node's resolver file, for dnsPolicy Default.
	HostResolvConf string
	// BackoffInitial and BackoffMax bound restart back-off (kubelet's 10s and 5m by default).
	BackoffInitial, BackoffMax time.Duration
	// Workers is how many Pods are started or stopped at once.
	Workers int
}

// Agent runs the Pods of one node.
type Agent struct {
	cfg      Config
	pods     corelisters.PodLister
	services corelisters.ServiceLister
	synced   []cache.InformerSynced
	factory  informers.SharedInformerFactory
	podsInf  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	status   workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	running map[string]*podRuntime // by namespace/name
}

// New builds the agent and registers its informers.
func New(cfg Config) *Agent {
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	if cfg.HostResolvConf == "" {
		cfg.HostResolvConf = "/etc/resolv.conf"
	}
	a := &Agent{
		cfg:     cfg,
		running: map[string]*podRuntime{},
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "pods"}),
		status:  workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "pod-status"}),
	}
	// Only this node's Pods: the API's watch cache indexes spec.nodeName for exactly this.
	a.podsInf = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	a.factory = informers.NewSharedInformerFactory(cfg.Client, 0)
	podInf := a.podsInf.Core().V1().Pods()
	svcInf := a.factory.Core().V1().Services()
	a.pods, a.services = podInf.Lister(), svcInf.Lister()
	a.synced = []cache.InformerSynced{podInf.Informer().HasSynced, svcInf.Informer().HasSynced}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	return a
}

// Run adopts what a previous agent left running, then keeps the node's Pods in their desired
// state until ctx ends. Pods keep running after Run returns: stopping the agent is not
// stopping its Pods.
func (a *Agent) Run(ctx context.Context) error {
	for _, dir := range []string{"pods"} {
		if err := os.MkdirAll(filepath.Join(a.cfg.DataDir, dir), 0o700); err != nil {
			return fmt.Errorf("creating the agent's data dir: %w", err)
		}
	}
	a.podsInf.Start(ctx.Done())
	a.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return ctx.Err()
	}
	a.adopt(ctx)
	for range a.cfg.Workers {
		go func() {
			for a.processNext(ctx) {
			}
		}()
	}
	for range 2 {
		go func() {
			for a.processStatus(ctx) {
			}
		}()
	}
	<-ctx.Done()
	a.queue.ShutDown()
	a.status.ShutDown()
	return nil
}

func (a *Agent) processNext(ctx context.Context) bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(ctx, key); err != nil {
		klog.ErrorS(err, "syncing pod", "pod", key)
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

func (a *Agent) lookup(key string) *podRuntime {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running[key]
}

// sync moves one Pod towards what the API says.
func (a *Agent) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	pod, err := a.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		pod = nil
	} else if err != nil {
		return err
	}
	pr := a.lookup(key)
	if pr != nil && (pod == nil || pod.UID != pr.uid) {
		// Gone from the API (or replaced by a namesake): nobody waits for a graceful stop.
		a.stopPod(pr, 0)
		pr = nil
	}
	if pod == nil {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		if pr != nil {
			grace := time.Duration(0)
			if pod.DeletionGracePeriodSeconds != nil {
				grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
			}
			if !pr.beginTermination() {
				return nil
			}
			go func() {
				a.stopPod(pr, grace)
				a.finishDeletion(ctx, pod)
			}()
			return nil
		}
		return a.finishDeletion(ctx, pod)
	}
	if pr != nil {
		pr.setPod(pod)
		return nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	return a.startPod(ctx, pod)
}

// finishDeletion removes a stopped Pod from the API: grace 0 is what tells the server that
// the node is done with it. The UID precondition keeps a namesake created meanwhile alive.
func (a *Agent) finishDeletion(ctx context.Context, pod *corev1.Pod) error {
	err := a.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting stopped pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// stopPod ends a Pod's containers (in parallel, each SIGTERM → grace → SIGKILL), then its
// namespace holder, and frees its network.
func (a *Agent) stopPod(pr *podRuntime, grace time.Duration) {
	pr.stopProbes()
	var wg sync.WaitGroup
	for _, c := range pr.containers {
		wg.Add(1)
		go func() { defer wg.Done(); c.sup.Stop(grace) }()
	}
	wg.Wait()
	if pr.pause.PID != 0 {
		runtime.Stop(pr.pause, time.Second)
	}
	if err := a.cfg.Network.Detach(string(pr.uid)); err != nil {
		klog.ErrorS(err, "detaching pod network", "pod", pr.key)
	}
	if err := a.cfg.Network.Release(string(pr.uid)); err != nil {
		klog.ErrorS(err, "releasing pod IP", "pod", pr.key)
	}
	os.RemoveAll(a.podDir(pr.uid))
	a.mu.Lock()
	if a.running[pr.key] == pr {
		delete(a.running, pr.key)
	}
	a.mu.Unlock()
	klog.InfoS("pod stopped", "pod", pr.key, "grace", grace)
}

// adopt takes over the Pods a previous agent recorded: those still in the API with a live
// namespace holder keep running untouched; the rest are stopped and their addresses freed.
func (a *Agent) adopt(ctx context.Context) {
	for _, r := range a.loadRecords() {
		key := r.Namespace + "/" + r.Name
		pod, err := a.pods.Pods(r.Namespace).Get(r.Name)
		alive := err == nil && pod.UID == r.UID && r.Pause.Alive() && pod.DeletionTimestamp == nil
		if !alive {
			klog.InfoS("removing a pod left by an earlier agent", "pod", key)
			pr := &podRuntime{agent: a, key: key, uid: r.UID}
			if r.Pause.Alive() {
				pr.pause = runtime.Adopt(r.Pause)
			}
			for _, c := range r.Containers {
				if c.Proc.Alive() {
					runtime.Stop(runtime.Adopt(c.Proc), 0)
				}
			}
			a.stopPod(pr, 0)
			continue
		}
		if err := a.adoptPod(ctx, pod, r); err != nil {
			klog.ErrorS(err, "adopting pod", "pod", key)
		}
	}
}
