package scheme

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
)

// addPodLogOptionsConversion lets the ParameterCodec read `pods/log` query parameters
// (?container=c&follow=true&tailLines=10...) into PodLogOptions. Upstream generates this
// conversion inside kube-apiserver; k8s.io/api does not carry it.
func addPodLogOptionsConversion(s *runtime.Scheme) error {
	return s.AddConversionFunc((*url.Values)(nil), (*corev1.PodLogOptions)(nil), func(a, b any, _ conversion.Scope) error {
		return podLogOptionsFromQuery(*a.(*url.Values), b.(*corev1.PodLogOptions))
	})
}

func podLogOptionsFromQuery(q url.Values, o *corev1.PodLogOptions) error {
	o.Container = q.Get("container")
	var err error
	parseBool := func(name string, into *bool) {
		if v := q.Get(name); v != "" && err == nil {
			if *into, err = strconv.ParseBool(v); err != nil {
				err = fmt.Errorf("%s: %q is not a boolean", name, v)
			}
		}
	}
	parseInt := func(name string, into **int64) {
		if v := q.Get(name); v != "" && err == nil {
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil {
				err = fmt.Errorf("%s: %q is not an integer", name, v)
				return
			}
			*into = &n
		}
	}
	parseBool("follow", &o.Follow)
	parseBool("previous", &o.Previous)
	parseBool("timestamps", &o.Timestamps)
	parseBool("insecureSkipTLSVerifyBackend", &o.InsecureSkipTLSVerifyBackend)
	parseInt("sinceSeconds", &o.SinceSeconds)
	parseInt("tailLines", &o.TailLines)
	parseInt("limitBytes", &o.LimitBytes)
	if v := q.Get("sinceTime"); v != "" && err == nil {
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return fmt.Errorf("sinceTime: %q is not an RFC 3339 time", v)
		}
		o.SinceTime = &metav1.Time{Time: t}
	}
	if v := q.Get("stream"); v != "" {
		o.Stream = &v
	}
	return err
}
