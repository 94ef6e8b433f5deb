package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/spf13/pflag"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/klog/v2"

	"github.com/svcplane/svcplane/pkg/apiserver"
	dnscmd "github.com/svcplane/svcplane/pkg/cmd/dns"
	dnscache "github.com/svcplane/svcplane/pkg/dns/cache"
)

// The embedded DNS server lists and watches the API server's storage in-process.
var _ dnscache.Source = (*apiserver.Server)(nil)

// dnsServiceIPOffset puts the kube-dns Service at the 10th address of the service range, where
// kubeadm puts CoreDNS's (10.96.0.10 for the default range), so Pods' resolv.conf is the familiar one.
const dnsServiceIPOffset = 10

// embeddedDNS is the DNS server that `svcplane server` runs in-process once the API is serving.
type embeddedDNS struct {
	enabled bool
	opts    *dnscmd.Options
}

func newEmbeddedDNS() *embeddedDNS {
	opts := dnscmd.NewOptions()
	// The API server's /metrics already serves the DNS metrics; no second HTTP port by default.
	opts.HealthListen = ""
	opts.PublishService = true
	return &embeddedDNS{enabled: true, opts: opts}
}

func (d *embeddedDNS) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&d.enabled, "dns", d.enabled, "Run the cluster DNS server and publish it as the kube-system/kube-dns Service.")
	d.opts.AddEmbeddedFlags(fs)
}

// completeAndValidate derives the kube-dns ClusterIP from the primary service CIDR, publishes
// the server at the API server's advertise address, and checks the DNS flags; nothing is checked
// when the DNS server is disabled.
func (d *embeddedDNS) completeAndValidate(serviceCIDRs []netip.Prefix, advertise netip.Addr) error {
	if !d.enabled {
		return nil
	}
	if advertise.IsValid() {
		d.opts.AdvertiseAddress = advertise.String()
	}
	if len(serviceCIDRs) > 0 {
		ip := serviceCIDRs[0].Masked().Addr()
		for range dnsServiceIPOffset {
			ip = ip.Next()
		}
		d.opts.ServiceIP = ip.String()
	}
	if err := d.opts.Complete(); err != nil {
		return err
	}
	return d.opts.Validate()
}

// addHook starts the DNS server once the API serves. It reads Services, EndpointSlices,
// Namespaces and Pods from the server's watch caches in-process, sharing their objects instead of
// decoding a copy of each from the loopback connection; only publishing the kube-dns Service goes
// through the loopback client. If it cannot bind the default :53 (not root, or another resolver
// holds it) the API server keeps running without DNS; addresses given with --dns-listen are a
// request, so failing them stops the server.
func (d *embeddedDNS) addHook(s *apiserver.Server, fail context.CancelCauseFunc) {
	if !d.enabled {
		return
	}
	s.AddPostStartHookOrDie("svcplane-dns", func(hook genericapiserver.PostStartHookContext) error {
		c, err := d.opts.StartWithSource(s, hook.LoopbackClientConfig)
		if err != nil {
			if slices.Equal(d.opts.Listen, dnscmd.NewOptions().Listen) {
				klog.Warningf("The cluster DNS server is not running (%v); the API server goes on without it. "+
					"Run as root or free port 53, pick another port with --dns-listen, or pass --dns=false to silence this.", err)
				return nil
			}
			fail(fmt.Errorf("starting the DNS server: %w", err))
			return nil
		}
		go func() {
			if err := c.Run(hook); err != nil {
				fail(fmt.Errorf("DNS server failed: %w", err))
			}
		}()
		return nil
	})
}
