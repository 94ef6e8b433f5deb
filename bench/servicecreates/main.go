// Command servicecreates measures how many Services, each with one EndpointSlice, an API server
// accepts per second from concurrent client-go writers. It prints one line of results; the
// script beside it (../service-creates.sh) starts the server and adds its memory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the server under test")
	services := flag.Int("services", 10000, "Services to create (each with one EndpointSlice)")
	writers := flag.Int("writers", 32, "concurrent client-go writers, each with its own client")
	namespace := flag.String("namespace", "bench", "namespace to create them in (created if missing)")
	protobuf := flag.Bool("protobuf", false, "send and accept protobuf, as controllers do, instead of client-go's default JSON, as kubectl does")
	flag.Parse()
	if err := run(*kubeconfig, *services, *writers, *namespace, *protobuf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(kubeconfig string, total, writers int, ns string, protobuf bool) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	if protobuf {
		cfg.ContentType = runtime.ContentTypeProtobuf
		cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	}
	// No client-side throttling: the server's rate is what is measured.
	cfg.QPS, cfg.Burst = -1, 0
	ctx := context.Background()
	admin := kubernetes.NewForConfigOrDie(cfg)
	_, err = admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		client := kubernetes.NewForConfigOrDie(cfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				if err := createPair(ctx, client, ns, i); err != nil {
					if failed.Add(1) <= 5 {
						fmt.Fprintln(os.Stderr, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	objects := 2 * (int64(total) - failed.Load())
	fmt.Printf("services=%d writers=%d failed=%d elapsed=%.1fs objects_per_sec=%.0f services_per_sec=%.0f\n",
		total, writers, failed.Load(), elapsed.Seconds(), float64(objects)/elapsed.Seconds(), float64(objects)/2/elapsed.Seconds())
	return nil
}

func createPair(ctx context.Context, client kubernetes.Interface, ns string, i int) error {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service %s: %w", name, err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250%250, i%250+2)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating EndpointSlice %s: %w", slice.Name, err)
	}
	return nil
}
