package scheme

import (
	"net/url"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodLogOptionsComeFromTheQuery(t *testing.T) {
	q, _ := url.ParseQuery("container=c&follow=true&tailLines=10&limitBytes=500&timestamps=1&sinceTime=2026-11-25T01:02:03Z")
	var got corev1.PodLogOptions
	if err := ParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, &got); err != nil {
		t.Fatal(err)
	}
	if got.Container != "c" || !got.Follow || !got.Timestamps || got.Previous || got.TailLines == nil || *got.TailLines != 10 ||
		got.LimitBytes == nil || *got.LimitBytes != 500 || got.SinceSeconds != nil || got.SinceTime == nil || got.SinceTime.Unix() != 1795568523 {
		t.Errorf("decoded %+v", got)
	}
	for _, bad := range []string{"follow=maybe", "tailLines=ten", "sinceTime=yesterday"} {
		q, _ := url.ParseQuery(bad)
		if err := ParameterCodec.DecodeParameters(q, corev1.SchemeGroupVersion, &corev1.PodLogOptions{}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
