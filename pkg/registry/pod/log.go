package pod

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericrest "k8s.io/apiserver/pkg/registry/generic/rest"
	"k8s.io/apiserver/pkg/registry/rest"
)

// LogREST is pods/log, what `kubectl logs` reads: as kube-apiserver does, it finds the Pod's
// node and streams the container's output from that node's agent (its kubelet port, the
// Node's status.daemonEndpoints.kubeletEndpoint, at its first InternalIP), following it when
// asked.
type LogREST struct {
	Pods, Nodes rest.Getter
	// Transport reaches the agents with the API server's client certificate and does not
	// verify theirs (kube-apiserver's default without --kubelet-certificate-authority); nil
	// when the server has no CA of its own to sign one, and logs are then unavailable.
	Transport http.RoundTripper
}

var (
	_ rest.GetterWithOptions = &LogREST{}
	_ rest.StorageMetadata   = &LogREST{}
)

func (r *LogREST) New() runtime.Object { return &corev1.Pod{} }

// Destroy does nothing: the pods store owns the storage.
func (r *LogREST) Destroy() {}

func (r *LogREST) ProducesMIMETypes(string) []string { return []string{"text/plain"} }

func (r *LogREST) ProducesObject(string) any { return "" }

func (r *LogREST) NewGetOptions() (runtime.Object, bool, string) {
	return &corev1.PodLogOptions{}, false, ""
}

// Get returns a stream of the log of the container opts names.
func (r *LogREST) Get(ctx context.Context, name string, opts runtime.Object) (runtime.Object, error) {
	o, ok := opts.(*corev1.PodLogOptions)
	if !ok {
		return nil, fmt.Errorf("invalid options object: %#v", opts)
	}
	if errs := validateLogOptions(o); len(errs) > 0 {
		return nil, apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("PodLogOptions").GroupKind(), name, errs)
	}
	obj, err := r.Pods.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pod := obj.(*corev1.Pod)
	container, err := logContainer(pod, o.Container)
	if err != nil {
		return nil, err
	}
	if pod.Spec.NodeName == "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", name))
	}
	if r.Transport == nil {
		return nil, apierrors.NewServiceUnavailable("this API server serves no logs: it has no CA of its own (--tls-cert-file was given) to sign its client certificate for node agents")
	}
	obj, err = r.Nodes.Get(genericapirequest.WithNamespace(ctx, ""), pod.Spec.NodeName, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	node := obj.(*corev1.Node)
	port := node.Status.DaemonEndpoints.KubeletEndpoint.Port
	addr := ""
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			addr = a.Address
			break
		}
	}
	if port == 0 || addr == "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("node %s serves no logs: its agent publishes no kubelet port and InternalIP (it runs without --logs-port or --certificate-authority)", node.Name))
	}
	ns := genericapirequest.NamespaceValue(ctx)
	query := url.Values{}
	setQuery := func(key string, set bool, value string) {
		if set {
			query.Set(key, value)
		}
	}
	setQuery("follow", o.Follow, "true")
	setQuery("previous", o.Previous, "true")
	setQuery("timestamps", o.Timestamps, "true")
	setQuery("tailLines", o.TailLines != nil, strconv.FormatInt(ptrValue(o.TailLines), 10))
	setQuery("limitBytes", o.LimitBytes != nil, strconv.FormatInt(ptrValue(o.LimitBytes), 10))
	setQuery("sinceSeconds", o.SinceSeconds != nil, strconv.FormatInt(ptrValue(o.SinceSeconds), 10))
	if o.SinceTime != nil {
		query.Set("sinceTime", o.SinceTime.UTC().Format("2006-01-02T15:04:05Z"))
	}
	location := &url.URL{Scheme: "https", Host: net.JoinHostPort(addr, strconv.Itoa(int(port))),
		Path: fmt.Sprintf("/containerLogs/%s/%s/%s", ns, name, container), RawQuery: query.Encode()}
	return &genericrest.LocationStreamer{
		Location:        location,
		Transport:       r.Transport,
		ContentType:     "text/plain",
		Flush:           o.Follow,
		ResponseChecker: genericrest.NewGenericHttpResponseChecker(corev1.Resource("pods/log"), name),
		RedirectChecker: genericrest.PreventRedirects,
	}, nil
}

func ptrValue(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// logContainer picks the container whose log is asked for, with upstream's messages.
func logContainer(pod *corev1.Pod, name string) (string, error) {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if name == "" {
		if len(names) == 1 {
			return names[0], nil
		}
		return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", pod.Name, names))
	}
	if !slices.Contains(names, name) {
		return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
	}
	return name, nil
}

// validateLogOptions is upstream's ValidatePodLogOptions.
func validateLogOptions(o *corev1.PodLogOptions) field.ErrorList {
	var errs field.ErrorList
	if o.TailLines != nil && *o.TailLines < 0 {
		errs = append(errs, field.Invalid(field.NewPath("tailLines"), *o.TailLines, "must be greater than or equal to 0"))
	}
	if o.LimitBytes != nil && *o.LimitBytes < 1 {
		errs = append(errs, field.Invalid(field.NewPath("limitBytes"), *o.LimitBytes, "must be greater than 0"))
	}
	switch {
	case o.SinceSeconds != nil && o.SinceTime != nil:
		errs = append(errs, field.Forbidden(field.NewPath(""), "at most one of `sinceTime` or `sinceSeconds` may be specified"))
	case o.SinceSeconds != nil && *o.SinceSeconds < 1:
		errs = append(errs, field.Invalid(field.NewPath("sinceSeconds"), *o.SinceSeconds, "must be greater than 0"))
	}
	return errs
}
