// Package server is the `svcplane server` command: its options (Complete → Validate → Config)
// and Run, which starts the embedded etcd (unless --etcd-servers names an external cluster), the
// API server and the built-in controllers, and stops them all on one shutdown path.
package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/svcplane/svcplane/pkg/admission/namespacelifecycle"
	"github.com/svcplane/svcplane/pkg/api/scheme"
	"github.com/svcplane/svcplane/pkg/apiserver"
	"github.com/svcplane/svcplane/pkg/auth"
	"github.com/svcplane/svcplane/pkg/controller/endpointslice"
	"github.com/svcplane/svcplane/pkg/controller/loadbalancer"
	"github.com/svcplane/svcplane/pkg/controller/nodeipam"
	"github.com/svcplane/svcplane/pkg/generated/openapi"
	"github.com/svcplane/svcplane/pkg/pki"
	"github.com/svcplane/svcplane/pkg/registry/service/allocator"
	"github.com/svcplane/svcplane/pkg/version"
)

// Options are the flags of `svcplane server`.
type Options struct {
	DataDir               string
	AdvertiseAddress      string
	ServiceClusterIPRange string
	ServiceNodePortRange  string
	TLSSANs               []string
	SecureServing         *genericoptions.SecureServingOptionsWithLoopback
	Etcd                  *genericoptions.EtcdOptions
	EndpointSlice         endpointslice.Options
	DNS                   *embeddedDNS
	// LBPools are the addresses of the LoadBalancerIPPool named "default".
	LBPools []string
	// Agent is --agent: this host's node agent, in this process.
	Agent *localAgent

	// Filled by Complete.
	advertiseIP   netip.Addr
	serviceCIDRs  []netip.Prefix
	nodePortRange allocator.PortRangeSpec
	adminToken    string
	caPEM         []byte
}

// NewOptions returns the defaults: HTTPS on :6443, data in ./svcplane-data, embedded etcd.
func NewOptions() *Options {
	serving := genericoptions.NewSecureServingOptions()
	serving.BindPort = 6443
	serving.ServerCert.PairName = "apiserver"
	return &Options{
		DataDir:               "svcplane-data",
		ServiceClusterIPRange: "10.96.0.0/12",
		ServiceNodePortRange:  "30000-32767",
		SecureServing:         serving.WithLoopback(),
		Etcd:                  genericoptions.NewEtcdOptions(storagebackend.NewDefaultConfig("/registry", nil)),
		EndpointSlice:         endpointslice.DefaultOptions(),
		DNS:                   newEmbeddedDNS(),
		Agent:                 newLocalAgent(),
	}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory for the embedded etcd, certificates, tokens and admin.kubeconfig.")
	fs.StringVar(&o.AdvertiseAddress, "advertise-address", o.AdvertiseAddress,
		"The IP address clients and nodes reach the API server at. Defaults to --bind-address, or to the host's first non-loopback address when binding to all.")
	fs.StringVar(&o.ServiceClusterIPRange, "service-cluster-ip-range", o.ServiceClusterIPRange,
		"CIDR Service cluster IPs are allocated from; its first address is the kubernetes Service. "+
			"For dual-stack, two CIDRs of different families separated by a comma; the first is the primary family.")
	fs.StringVar(&o.ServiceNodePortRange, "service-node-port-range", o.ServiceNodePortRange,
		"Port range (first-last, inclusive) NodePort and LoadBalancer Services' node ports are allocated from.")
	fs.StringSliceVar(&o.TLSSANs, "tls-san", o.TLSSANs, "Extra DNS names or IP addresses for the serving certificate (repeatable).")
	o.SecureServing.AddFlags(fs)
	o.Etcd.AddFlags(fs)
	o.EndpointSlice.AddFlags(fs)
	o.DNS.addFlags(fs)
	o.Agent.addFlags(fs)
	fs.StringArrayVar(&o.LBPools, "lb-pool", o.LBPools,
		"CIDR or first-last range of LoadBalancer Service addresses (repeatable); kept as the LoadBalancerIPPool named \"default\". Unset leaves that pool alone.")
	fs.StringVar(&nodeipam.ClusterCIDR, "cluster-cidr", nodeipam.ClusterCIDR, "CIDR Pod addresses come from, or one per IP family (10.244.0.0/16,fd00:244::/56; the first is the primary): every Node without pod CIDRs gets the next free /24 (IPv4) and /64 (IPv6) of each.")
	// The embedded etcd is the default; these flags only matter with --etcd-servers.
	fs.Lookup("etcd-servers").Usage = "Use these etcd servers (scheme://ip:port, comma separated) instead of the embedded etcd."
}

// Complete fills in defaults derived from other options and from the data dir: the advertise
// address, the PKI and the admin token. It creates them on first start.
func (o *Options) Complete() error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating --data-dir %s: %w", o.DataDir, err)
	}
	advertise, err := o.resolveAdvertiseAddress()
	if err != nil {
		return err
	}
	o.advertiseIP = advertise

	certs := pki.FilesIn(o.DataDir)
	if o.SecureServing.ServerCert.CertKey.CertFile == "" {
		hosts, err := o.servingHosts()
		if err != nil {
			return err
		}
		if o.caPEM, err = pki.Ensure(certs, hosts); err != nil {
			return err
		}
		o.SecureServing.ServerCert.CertKey.CertFile = certs.ServingCert
		o.SecureServing.ServerCert.CertKey.KeyFile = certs.ServingKey
	} else if o.caPEM, err = os.ReadFile(o.SecureServing.ServerCert.CertKey.CertFile); err != nil {
		return fmt.Errorf("reading --tls-cert-file: %w", err)
	}

	if o.adminToken, err = auth.EnsureAdminToken(o.tokenFile()); err != nil {
		return err
	}
	return nil
}

func (o *Options) tokenFile() string { return filepath.Join(o.DataDir, "tokens.csv") }

// AdminKubeconfigPath is where the admin kubeconfig is written.
func (o *Options) AdminKubeconfigPath() string { return filepath.Join(o.DataDir, "admin.kubeconfig") }

func (o *Options) resolveAdvertiseAddress() (netip.Addr, error) {
	if o.AdvertiseAddress != "" {
		addr, err := netip.ParseAddr(o.AdvertiseAddress)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("--advertise-address %q is not an IP address", o.AdvertiseAddress)
		}
		return addr, nil
	}
	if bind, ok := netip.AddrFromSlice(o.SecureServing.BindAddress); ok && !bind.Unmap().IsUnspecified() {
		return bind.Unmap(), nil
	}
	for _, addr := range hostAddresses() {
		if !addr.IsLoopback() && addr.Is4() {
			return addr, nil
		}
	}
	return netip.MustParseAddr("127.0.0.1"), nil
}

// servingHosts are the names and addresses the serving certificate must cover: loopback, this
// host's addresses, the advertise address, the kubernetes Service's IP and names, and --tls-san.
func (o *Options) servingHosts() ([]string, error) {
	hosts := []string{"localhost", "127.0.0.1", "::1", o.advertiseIP.String(),
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if name, err := os.Hostname(); err == nil {
		hosts = append(hosts, name)
	}
	for _, addr := range hostAddresses() {
		hosts = append(hosts, addr.String())
	}
	cidrs, err := parseServiceCIDRs(o.ServiceClusterIPRange)
	if err != nil {
		return nil, err
	}
	for _, prefix := range cidrs {
		hosts = append(hosts, prefix.Masked().Addr().Next().String())
	}
	return append(hosts, o.TLSSANs...), nil
}

func hostAddresses() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok {
			if addr, ok := netip.AddrFromSlice(ipnet.IP); ok && !addr.Unmap().IsLinkLocalUnicast() {
				out = append(out, addr.Unmap())
			}
		}
	}
	return out
}

// Validate reports every invalid option at once.
func (o *Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	var err error
	if o.serviceCIDRs, err = parseServiceCIDRs(o.ServiceClusterIPRange); err != nil {
		errs = append(errs, err)
	}
	if o.nodePortRange, err = allocator.ParsePortRange(o.ServiceNodePortRange); err != nil {
		errs = append(errs, fmt.Errorf("--service-node-port-range: %w", err))
	}
	if err := o.DNS.completeAndValidate(o.serviceCIDRs, o.advertiseIP); err != nil {
		errs = append(errs, err)
	} else if len(errs) == 0 {
		// Last, as it reads the DNS options completed just above.
		errs = append(errs, o.Agent.complete(o))
	}
	if err := o.EndpointSlice.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := loadbalancer.ValidatePoolFlag(o.LBPools); err != nil {
		errs = append(errs, err)
	}
	if err := nodeipam.ValidateFlags(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.SecureServing.Validate()...)
	for _, err := range o.Etcd.Validate() {
		// Without --etcd-servers the embedded etcd is used, so its absence is not an error.
		if !strings.Contains(err.Error(), "--etcd-servers must be specified") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// parseServiceCIDRs reads --service-cluster-ip-range: one CIDR, or two of different families.
func parseServiceCIDRs(flag string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(flag, ",") {
		prefix, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--service-cluster-ip-range %q: %q is not a CIDR", flag, s)
		}
		out = append(out, prefix.Masked())
	}
	switch {
	case len(out) > 2:
		return nil, fmt.Errorf("--service-cluster-ip-range %q: at most two CIDRs (one IPv4, one IPv6)", flag)
	case len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4():
		return nil, fmt.Errorf("--service-cluster-ip-range %q: a dual-stack range needs one IPv4 and one IPv6 CIDR", flag)
	}
	for _, prefix := range out {
		if prefix.Addr().Is6() && prefix.Bits() < 64 {
			return nil, fmt.Errorf("--service-cluster-ip-range %q: an IPv6 range may be at most a /64", flag)
		}
		if prefix.Addr().Is4() && prefix.Bits() > 30 {
			return nil, fmt.Errorf("--service-cluster-ip-range %q: an IPv4 range needs at least a /30", flag)
		}
	}
	return out, nil
}

// storageCodec stores objects as protobuf in their v1 version, as kube-apiserver does.
func storageCodec() (runtime.Codec, runtime.GroupVersioner, error) {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		return nil, nil, errors.New("no protobuf serializer registered")
	}
	versions := schema.GroupVersions{corev1.SchemeGroupVersion, appsv1.SchemeGroupVersion,
		discoveryv1.SchemeGroupVersion, autoscalingv1.SchemeGroupVersion}
	codec := scheme.Codecs.CodecForVersions(info.Serializer, scheme.Codecs.UniversalDeserializer(), versions, runtime.InternalGroupVersioner)
	return codec, versions, nil
}

// Config builds the API server's configuration; etcdEndpoint is the embedded etcd's, or empty
// when --etcd-servers is set.
func (o *Options) Config(etcdEndpoint string) (*apiserver.Config, error) {
	cfg := genericapiserver.NewConfig(scheme.Codecs)
	cfg.EffectiveVersion = version.NewEffective()
	cfg.PublicAddress = o.advertiseIP.AsSlice()
	if err := o.SecureServing.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		return nil, fmt.Errorf("setting up HTTPS serving: %w", err)
	}
	// The built-in controllers write v1 Endpoints on purpose, as kube-controller-manager does; the
	// server's deprecation warning on each write is for users, and logging it every time was 10k
	// log lines per 10k Services. Each distinct warning is still printed once.
	cfg.LoopbackClientConfig.WarningHandler = rest.NewWarningWriter(os.Stderr, rest.WarningWriterOptions{Deduplicate: true})
	// Nothing is gained by compressing what the server sends itself (kube-apiserver disables it
	// on its loopback config too): each watch event the in-process DNS server and the other
	// loopback informers received was gzipped, each in-flight compressor holding ~0.8 MB.
	cfg.LoopbackClientConfig.DisableCompression = true

	tokens, err := auth.LoadTokenFile(o.tokenFile())
	if err != nil {
		return nil, err
	}
	cfg.Authentication.Authenticator = auth.NewRequestAuthenticator(tokens)
	cfg.Authorization.Authorizer = auth.Authorizer{}

	codec, versions, err := storageCodec()
	if err != nil {
		return nil, err
	}
	etcdOpts := *o.Etcd
	etcdOpts.StorageConfig.Codec = codec
	etcdOpts.StorageConfig.EncodeVersioner = versions
	if etcdEndpoint != "" {
		etcdOpts.StorageConfig.Transport.ServerList = []string{etcdEndpoint}
	}
	if err := etcdOpts.ApplyTo(cfg); err != nil {
		return nil, fmt.Errorf("setting up etcd storage: %w", err)
	}

	namer := openapinamer.NewDefinitionNamer(scheme.NewExternalScheme())
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title = "Kubernetes"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title = "Kubernetes"

	client, err := kubernetes.NewForConfig(cfg.LoopbackClientConfig)
	if err != nil {
		return nil, err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(dropManagedFields))
	cfg.AdmissionControl = namespacelifecycle.New(client, factory.Core().V1().Namespaces().Informer())

	services, err := o.serviceConfig(etcdOpts.StorageConfig)
	if err != nil {
		return nil, err
	}
	kubelet, err := o.kubeletTransport()
	if err != nil {
		return nil, err
	}
	return &apiserver.Config{Generic: cfg, Informers: factory, Controllers: o.controllers(), Services: services,
		KubeletTransport: kubelet}, nil
}

// kubeletTransport is how the server reaches node agents for `kubectl logs`: with the client
// certificate its CA signed for them (pki.Ensure). Like kube-apiserver without
// --kubelet-certificate-authority it does not verify the agents' own certificates. A server
// given --tls-cert-file has no CA of its own, and serves no logs.
func (o *Options) kubeletTransport() (http.RoundTripper, error) {
	certs := pki.FilesIn(o.DataDir)
	if o.SecureServing.ServerCert.CertKey.CertFile != certs.ServingCert {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certs.KubeletClientCert, certs.KubeletClientKey)
	if err != nil {
		return nil, fmt.Errorf("loading the client certificate for node agents: %w", err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	return t, nil
}

// dropManagedFields slims objects before they enter the built-in controllers' informer caches,
// as kube-controller-manager, kube-scheduler and kube-apiserver's own informers do: no controller
// reads managedFields, and at 10k Services they were ~55 MB of the ~360 MB live heap (pprof under
// bench/service-creates.sh). An update built from a cached copy then sends no managedFields,
// which the server reads as "leave them as they are". For the kinds whose informers read the watch
// caches in-process (pkg/apiserver, sharedinformers.go) it clears the field in the informer's own
// top-level copy; the watch cache's object, which the copy shares everything else with, keeps it.
func dropManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// serviceConfig connects the Service allocators to the etcd the objects are stored in.
func (o *Options) serviceConfig(storage storagebackend.Config) (*apiserver.ServiceConfig, error) {
	client, err := allocator.NewEtcdClient(storage.Transport)
	if err != nil {
		return nil, err
	}
	set, err := allocator.NewSet(client, storage.Prefix, o.serviceCIDRs, o.nodePortRange)
	if err != nil {
		client.Close()
		return nil, err
	}
	return &apiserver.ServiceConfig{Allocators: set, StoragePrefix: storage.Prefix,
		Advertise: o.advertiseIP, Port: o.SecureServing.BindPort}, nil
}

// WriteAdminKubeconfig writes the kubeconfig of the admin user.
func (o *Options) WriteAdminKubeconfig() error {
	host := o.advertiseIP.String()
	if bind, ok := netip.AddrFromSlice(o.SecureServing.BindAddress); ok && (bind.Unmap().IsUnspecified() || bind.Unmap().IsLoopback()) {
		// A server listening on all addresses is reachable on loopback, which never changes.
		host = "127.0.0.1"
	}
	server := "https://" + net.JoinHostPort(host, fmt.Sprint(o.SecureServing.BindPort))
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["svcplane"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: o.caPEM}
	kubeconfig.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: o.adminToken}
	kubeconfig.Contexts["svcplane"] = &clientcmdapi.Context{Cluster: "svcplane", AuthInfo: "admin", Namespace: "default"}
	kubeconfig.CurrentContext = "svcplane"
	if err := clientcmd.WriteToFile(*kubeconfig, o.AdminKubeconfigPath()); err != nil {
		return fmt.Errorf("writing %s: %w", o.AdminKubeconfigPath(), err)
	}
	return os.Chmod(o.AdminKubeconfigPath(), 0o600)
}
