// Command dnsbench prepares and measures the DNS benchmark of bench/dns/run.sh:
//
//	dnsbench fixture  creates N Services with M endpoints each and writes a dnsperf query file
//	dnsbench changes  measures how long a change in the API takes to show in DNS answers
//
// The Services have no selector and their EndpointSlices name a manager that is no controller,
// so what is measured is the DNS servers, not the endpoint controllers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dnsbench fixture|changes [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "fixture":
		err = fixture(os.Args[2:])
	case "changes":
		err = changes(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func client(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	return kubernetes.NewForConfig(cfg)
}

const benchNS = "bench"

func fixture(args []string) error {
	fs := flag.NewFlagSet("fixture", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server")
	services := fs.Int("services", 10000, "number of Services")
	perService := fs.Int("endpoints-per-service", 5, "endpoints in each Service's EndpointSlice")
	headlessEvery := fs.Int("headless-every", 10, "every Nth Service is headless")
	workers := fs.Int("workers", 32, "concurrent API writers")
	queries := fs.String("queries", "queries.txt", "dnsperf query file to write")
	fs.Parse(args)

	c, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNS}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	start := time.Now()
	var done atomic.Int64
	next := make(chan int)
	errc := make(chan error, *workers)
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := createService(ctx, c, i, *perService, *headlessEvery > 0 && i%*headlessEvery == 0); err != nil {
					errc <- err
					return
				}
				if n := done.Add(1); n%1000 == 0 {
					fmt.Fprintf(os.Stderr, "  %d Services created (%v)\n", n, time.Since(start).Round(time.Second))
				}
			}
		}()
	}
	for i := range *services {
		select {
		case next <- i:
		case err := <-errc:
			close(next)
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	fmt.Fprintf(os.Stderr, "fixture: %d Services, %d endpoints in %v\n", *services, *services**perService, time.Since(start).Round(time.Second))

	f, err := os.Create(*queries)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := range *services {
		fmt.Fprintf(f, "svc-%d.%s.svc.cluster.local A\n", i, benchNS)
	}
	return nil
}

func createService(ctx context.Context, c kubernetes.Interface, i, endpoints int, headless bool) error {
	name := fmt.Sprintf("svc-%d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)},
		}},
	}
	if headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	if _, err := c.CoreV1().Services(benchNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", name, err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Namespace: benchNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: name,
			discoveryv1.LabelManagedBy:   "dnsbench",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for e := range endpoints {
		n := i*endpoints + e
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+n>>16, n>>8&0xff, n&0xff)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		})
	}
	if _, err := c.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating EndpointSlice %s: %w", slice.Name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// changes makes one change at a time and polls the DNS server every millisecond until the answer
// reflects it; the time from the API's reply to the first matching DNS answer is the latency.
func changes(args []string) error {
	fs := flag.NewFlagSet("changes", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server")
	server := fs.String("server", "127.0.0.1:53", "DNS server to poll")
	rounds := fs.Int("rounds", 20, "changes of each kind")
	fs.Parse(args)
	c, err := client(*kubeconfig)
	if err != nil {
		return err
	}
	ctx := context.Background()
	dc := &dns.Client{Timeout: time.Second}
	wait := func(name string, want func(*dns.Msg) bool) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < 10*time.Second {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if r, _, err := dc.Exchange(m, *server); err == nil && want(r) {
				return time.Since(start), nil
			}
			time.Sleep(time.Millisecond)
		}
		return 0, fmt.Errorf("%s: no matching answer within 10s", name)
	}
	has := func(r *dns.Msg) bool { return r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 }
	gone := func(r *dns.Msg) bool { return r.Rcode == dns.RcodeNameError }
	var created, ready, deleted []time.Duration
	for i := range *rounds {
		name := fmt.Sprintf("change-%d", i)
		fqdn := name + "." + benchNS + ".svc.cluster.local."
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(80)}},
		}}
		// A headless Service answers once it has a ready endpoint: that is the "Service created"
		// and, flipping readiness, the "endpoint became ready" change.
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS, Labels: map[string]string{
				discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "dnsbench"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.250.%d.1", i)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}}},
		}
		if slice, err = c.DiscoveryV1().EndpointSlices(benchNS).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			return err
		}
		svc.Spec.ClusterIP = ""
		svc.Name = name + "-vip"
		if _, err := c.CoreV1().Services(benchNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return err
		}
		d, err := wait(name+"-vip."+benchNS+".svc.cluster.local.", has)
		if err != nil {
			return err
		}
		created = append(created, d)

		hl := svc.DeepCopy()
		hl.Name, hl.ResourceVersion, hl.Spec.ClusterIP, hl.Spec.ClusterIPs = name, "", corev1.ClusterIPNone, nil
		if _, err := c.CoreV1().Services(benchNS).Create(ctx, hl, metav1.CreateOptions{}); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
		slice.Endpoints[0].Conditions.Ready = ptr(true)
		if _, err := c.DiscoveryV1().EndpointSlices(benchNS).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if d, err = wait(fqdn, has); err != nil {
			return err
		}
		ready = append(ready, d)

		if err := c.CoreV1().Services(benchNS).Delete(ctx, name+"-vip", metav1.DeleteOptions{}); err != nil {
			return err
		}
		if d, err = wait(name+"-vip."+benchNS+".svc.cluster.local.", gone); err != nil {
			return err
		}
		deleted = append(deleted, d)
	}
	report := func(what string, ds []time.Duration) {
		slices.Sort(ds)
		fmt.Printf("%-28s median %6.1f ms   p95 %6.1f ms   max %6.1f ms\n", what,
			ms(ds[len(ds)/2]), ms(ds[len(ds)*95/100]), ms(ds[len(ds)-1]))
	}
	report("Service created → answer", created)
	report("endpoint ready → answer", ready)
	report("Service deleted → NXDOMAIN", deleted)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
