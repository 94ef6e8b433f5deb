// Package version says which Kubernetes API svcplane serves and which build this is. Clients
// such as kubectl compare the server's /version with their own, so it speaks Kubernetes
// versions: v1.37.x, the API the k8s.io libraries of this build implement.
package version

import (
	"strings"

	apimachineryversion "k8s.io/apimachinery/pkg/version"
	"k8s.io/component-base/compatibility"
	componentversion "k8s.io/component-base/version"
)

// KubernetesVersion is the Kubernetes release whose API this build serves.
const KubernetesVersion = "v1.37.2"

// Get returns the build's version info; a build without -ldflags version stamps reports
// KubernetesVersion with a "-svcplane" suffix rather than component-base's placeholder.
func Get() apimachineryversion.Info {
	info := componentversion.Get()
	if strings.HasPrefix(info.GitVersion, "v0.0.0") {
		info.GitVersion = KubernetesVersion + "-svcplane"
		info.Major, info.Minor = "1", "37"
		info.GitCommit, info.GitTreeState = "", ""
	}
	return info
}

// Effective is the version the API server serves and emulates.
type Effective struct {
	compatibility.MutableEffectiveVersion
}

// NewEffective returns the effective version of this build.
func NewEffective() *Effective {
	return &Effective{compatibility.NewEffectiveVersionFromString(strings.TrimPrefix(KubernetesVersion, "v"), "", "")}
}

// Info is what /version serves.
func (e *Effective) Info() *apimachineryversion.Info {
	info := e.MutableEffectiveVersion.Info()
	build := Get()
	info.GitVersion, info.Major, info.Minor = build.GitVersion, build.Major, build.Minor
	info.GitCommit, info.GitTreeState, info.BuildDate = build.GitCommit, build.GitTreeState, build.BuildDate
	return info
}
