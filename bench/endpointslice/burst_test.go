// Package endpointslice benchmarks the EndpointSlice controller against the real server:
//
//	go test ./bench/endpointslice/ -run '^$' -bench . -benchtime 1x -timeout 30m -v
//
// BenchmarkBurst creates 1,000 Services with 10 Pods each in one burst (each Pod created bound to
// a Node, then given an IP and Ready through pods/status, as an agent would), waits until every
// Service's slice lists its 10 ready endpoints, and reports the time to converge and the number of
// EndpointSlice writes (creates, updates, deletes seen on a watch) per slice. It then flips one
// Pod's readiness 20 times with all 10,000 endpoints in place and reports the median time from the
// status write to the watch event carrying the change. Legacy Endpoints writes are reported too.
// SVCPLANE_BENCH_PROFILE=DIR saves a CPU profile of the server during the flips.
package endpointslice

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/svcplane/svcplane/test/testserver"
)

const (
	namespace      = "bench"
	services       = 1000
	podsPerService = 10
	clientWorkers  = 16
	flips          = 20
)

func podIP(service, pod int) string {
	n := service*podsPerService + pod
	return fmt.Sprintf("10.200.%d.%d", n/250, n%250+1)
}

// sliceState is the bench's view of the slices, fed by one watch.
type sliceState struct {
	mu       sync.Mutex
	ready    map[string]map[string]bool // slice name -> IP -> ready
	service  map[string]string          // slice name -> service
	writes   atomic.Int64
	changed  chan struct{}
	watchErr error
}

func (st *sliceState) apply(ev watch.Event) {
	slice, ok := ev.Object.(*discoveryv1.EndpointSlice)
	if !ok || slice.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
		return
	}
	st.writes.Add(1)
	st.mu.Lock()
	if ev.Type == watch.Deleted {
		delete(st.ready, slice.Name)
	} else {
		m := map[string]bool{}
		for _, e := range slice.Endpoints {
			m[e.Addresses[0]] = e.Conditions.Ready != nil && *e.Conditions.Ready
		}
		st.ready[slice.Name] = m
		st.service[slice.Name] = slice.Labels[discoveryv1.LabelServiceName]
	}
	st.mu.Unlock()
	select {
	case st.changed <- struct{}{}:
	default:
	}
}

// converged reports how many Services have exactly their 10 ready endpoints.
func (st *sliceState) converged() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	perService := map[string]int{}
	for name, eps := range st.ready {
		for _, r := range eps {
			if r {
				perService[st.service[name]]++
			}
		}
	}
	n := 0
	for _, count := range perService {
		if count == podsPerService {
			n++
		}
	}
	return n
}

func (st *sliceState) readyOf(ip string) (ready, found bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, eps := range st.ready {
		if r, ok := eps[ip]; ok {
			return r, true
		}
	}
	return false, false
}

func BenchmarkBurst(b *testing.B) {
	s := testserver.Start(b, testserver.Options{})
	client := s.Client
	ctx := context.Background()
	for _, n := range []string{"node-a", "node-b"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelTopologyZone: "zone-" + n[5:]}}}
		if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	w, err := client.DiscoveryV1().EndpointSlices(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	epWatch, err := client.CoreV1().Endpoints(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer epWatch.Stop()
	var endpointsWrites atomic.Int64
	go func() {
		for range epWatch.ResultChan() {
			endpointsWrites.Add(1)
		}
	}()
	st := &sliceState{ready: map[string]map[string]bool{}, service: map[string]string{}, changed: make(chan struct{}, 1)}
	go func() {
		for ev := range w.ResultChan() {
			st.apply(ev)
		}
	}()

	b.ResetTimer()
	start := time.Now()
	var apiCalls atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for range clientWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				createService(b, client, i, &apiCalls)
			}
		}()
	}
	for i := range services {
		work <- i
	}
	close(work)
	wg.Wait()
	created := time.Since(start)
	for st.converged() < services {
		select {
		case <-st.changed:
		case <-time.After(2 * time.Minute):
			b.Fatalf("only %d of %d Services converged after 2 minutes past the burst", st.converged(), services)
		}
	}
	converge := time.Since(start)
	// Writes still in flight after convergence belong to the burst too.
	time.Sleep(3 * time.Second)
	writes := st.writes.Load()
	legacyWrites := endpointsWrites.Load()
	st.mu.Lock()
	numSlices := len(st.ready)
	st.mu.Unlock()
	b.StopTimer()

	// One Pod's readiness flip with every endpoint in place.
	var latencies []time.Duration
	ip := podIP(500, 3)
	for i := range flips {
		wantReady := i%2 == 1
		t0 := time.Now()
		setPodStatus(b, client, "svc-500-3", ip, wantReady)
		for {
			if r, ok := st.readyOf(ip); ok && r == wantReady {
				break
			}
			select {
			case <-st.changed:
			case <-time.After(10 * time.Second):
				b.Fatalf("flip %d of %s not reflected within 10s", i, ip)
			}
		}
		latencies = append(latencies, time.Since(t0))
		time.Sleep(100 * time.Millisecond)
	}
	slices.Sort(latencies)
	median := (latencies[flips/2-1] + latencies[flips/2]) / 2

	b.ReportMetric(created.Seconds(), "s-to-create")
	b.ReportMetric(converge.Seconds(), "s-to-converge")
	b.ReportMetric(float64(writes), "slice-writes")
	b.ReportMetric(float64(numSlices), "slices")
	b.ReportMetric(float64(writes)/float64(numSlices), "writes/slice")
	b.ReportMetric(float64(legacyWrites)/services, "endpoints-writes/service")
	b.ReportMetric(float64(median.Microseconds())/1000, "ms-flip-median")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "ms-flip-max")
	b.Logf("burst: %d API calls in %v; %d/%d Services converged %v after the start; %d slice writes for %d slices",
		apiCalls.Load(), created.Round(time.Millisecond), services, services, converge.Round(time.Millisecond), writes, numSlices)
	b.Logf("readiness flip latencies (sorted): %v", latencies)
}

func createService(b *testing.B, client kubernetes.Interface, i int, calls *atomic.Int64) {
	ctx := context.Background()
	name := fmt.Sprintf("svc-%d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
		},
	}
	if _, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Error(err)
		return
	}
	calls.Add(1)
	for p := range podsPerService {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, p), Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: []string{"node-a", "node-b"}[p%2],
				Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		if _, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			b.Error(err)
			return
		}
		calls.Add(1)
	}
	for p := range podsPerService {
		setPodStatus(b, client, fmt.Sprintf("%s-%d", name, p), podIP(i, p), true)
		calls.Add(1)
	}
}

func setPodStatus(b testing.TB, client kubernetes.Interface, name, ip string, ready bool) {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{
		"phase": "Running", "podIP": ip, "podIPs": []map[string]string{{"ip": ip}},
		"conditions": []map[string]any{{"type": "Ready", "status": status, "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
	}})
	if _, err := client.CoreV1().Pods(namespace).Patch(context.Background(), name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		b.Error(err)
	}
}

// BenchmarkFlipInOneLargeService is the other reading of "a flip at 10,000 endpoints": one
// Service whose 10,000 Pods fill 100 slices, where every sync of the Service recomputes all of
// them. It reports the same flip median and how many slices each flip rewrote.
func BenchmarkFlipInOneLargeService(b *testing.B) {
	const pods = services * podsPerService
	s := testserver.Start(b, testserver.Options{})
	client := s.Client
	ctx := context.Background()
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "big"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "big"}, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := client.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	w, err := client.DiscoveryV1().EndpointSlices(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	st := &sliceState{ready: map[string]map[string]bool{}, service: map[string]string{}, changed: make(chan struct{}, 1)}
	go func() {
		for ev := range w.ResultChan() {
			st.apply(ev)
		}
	}()
	work := make(chan int)
	var wg sync.WaitGroup
	for range clientWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := fmt.Sprintf("big-%d", i)
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "big"}},
					Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
				if _, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
					b.Error(err)
					continue
				}
				setPodStatus(b, client, name, podIP(i/podsPerService, i%podsPerService), true)
			}
		}()
	}
	for i := range pods {
		work <- i
	}
	close(work)
	wg.Wait()
	for {
		st.mu.Lock()
		n := 0
		for _, eps := range st.ready {
			for _, r := range eps {
				if r {
					n++
				}
			}
		}
		st.mu.Unlock()
		if n == pods {
			break
		}
		select {
		case <-st.changed:
		case <-time.After(2 * time.Minute):
			b.Fatalf("only %d of %d endpoints ready after 2 minutes", n, pods)
		}
	}
	time.Sleep(3 * time.Second)

	stopProfile := profileServer(b, s, "flips")
	defer stopProfile()
	var latencies []time.Duration
	ip := podIP(500, 3)
	before := st.writes.Load()
	for i := range flips {
		wantReady := i%2 == 1
		t0 := time.Now()
		setPodStatus(b, client, "big-5003", ip, wantReady)
		for {
			if r, ok := st.readyOf(ip); ok && r == wantReady {
				break
			}
			select {
			case <-st.changed:
			case <-time.After(10 * time.Second):
				b.Fatalf("flip %d of %s not reflected within 10s", i, ip)
			}
		}
		latencies = append(latencies, time.Since(t0))
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	slices.Sort(latencies)
	st.mu.Lock()
	numSlices := len(st.ready)
	st.mu.Unlock()
	b.ReportMetric(float64(numSlices), "slices")
	b.ReportMetric(float64(st.writes.Load()-before)/flips, "slice-writes/flip")
	b.ReportMetric(float64((latencies[flips/2-1]+latencies[flips/2]).Microseconds())/2000, "ms-flip-median")
	b.ReportMetric(float64(latencies[len(latencies)-1].Microseconds())/1000, "ms-flip-max")
	b.Logf("readiness flip latencies (sorted): %v", latencies)
}

// profileServer captures a CPU profile of the server while a phase runs, when
// SVCPLANE_BENCH_PROFILE names a directory; the returned func waits for it to be written.
func profileServer(b *testing.B, s *testserver.Server, phase string) func() {
	dir := os.Getenv("SVCPLANE_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body, err := s.Client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "8").DoRaw(context.Background())
		if err != nil {
			b.Logf("profiling the server: %v", err)
			return
		}
		path := filepath.Join(dir, b.Name()+"-"+phase+".pprof")
		if err := os.WriteFile(path, body, 0o644); err == nil {
			b.Logf("server CPU profile of %s: %s", phase, path)
		}
	}()
	return func() { <-done }
}
