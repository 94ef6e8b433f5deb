package sandbox

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// hostKubeconfig derives the kubeconfig users get from the server's admin.kubeconfig: same CA
// and credentials, but pointing at the forwarder on the host's loopback (the server's serving
// certificate covers 127.0.0.1). Cluster, user and context are named after the sandbox, so
// that kubeconfigs of several sandboxes can be merged (KUBECONFIG=a:b) without clashing.
func hostKubeconfig(adminPath, name, hostURL, outPath string) error {
	admin, err := clientcmd.LoadFromFile(adminPath)
	if err != nil {
		return fmt.Errorf("reading the server's kubeconfig %s: %w", adminPath, err)
	}
	cluster := currentCluster(admin)
	if cluster == nil {
		return fmt.Errorf("the server's kubeconfig %s has no cluster entry", adminPath)
	}
	user := currentAuthInfo(admin)
	if user == nil {
		return fmt.Errorf("the server's kubeconfig %s has no user entry", adminPath)
	}
	entry := "svcplane-" + name
	out := clientcmdapi.NewConfig()
	out.Clusters[entry] = &clientcmdapi.Cluster{Server: hostURL, CertificateAuthorityData: cluster.CertificateAuthorityData}
	out.AuthInfos[entry] = user
	out.Contexts[entry] = &clientcmdapi.Context{Cluster: entry, AuthInfo: entry, Namespace: "default"}
	out.CurrentContext = entry
	if err := clientcmd.WriteToFile(*out, outPath); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", outPath, err)
	}
	return nil
}

// readyzClient returns an HTTPS client that trusts the CA of cfg's current cluster.
func readyzClient(cfg *clientcmdapi.Config) (*http.Client, error) {
	cluster := currentCluster(cfg)
	if cluster == nil {
		return nil, errors.New("kubeconfig has no cluster for its current context")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cluster.CertificateAuthorityData) {
		return nil, errors.New("kubeconfig has no usable certificate-authority-data")
	}
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			// The probe must reach the forwarder on loopback, never a proxy from the environment.
			Proxy: nil,
		},
	}, nil
}

func currentCluster(cfg *clientcmdapi.Config) *clientcmdapi.Cluster {
	if ctx, ok := cfg.Contexts[cfg.CurrentContext]; ok {
		if c, ok := cfg.Clusters[ctx.Cluster]; ok {
			return c
		}
	}
	for _, c := range cfg.Clusters {
		return c
	}
	return nil
}

func currentAuthInfo(cfg *clientcmdapi.Config) *clientcmdapi.AuthInfo {
	if ctx, ok := cfg.Contexts[cfg.CurrentContext]; ok {
		if a, ok := cfg.AuthInfos[ctx.AuthInfo]; ok {
			return a
		}
	}
	for _, a := range cfg.AuthInfos {
		return a
	}
	return nil
}
