package nftables

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// New returns a Proxier programming the network namespace this process runs in, after
// checking that the kernel has every nf_tables feature the rules use.
func New(cfg Config) (*Proxier, error) {
	p := NewProxier(cfg, nil)
	// The socket belongs to the namespace of the thread that opens it. A thread of this
	// process may sit in another namespace for a moment (the agent sets up Pod namespaces
	// on locked threads), so open it on a locked thread checked to be in the process's own.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := inProcessNetns(); err != nil {
		return nil, err
	}
	k, err := NewNetlinkKernel(p)
	if err != nil {
		return nil, err
	}
	p.kernel = k
	h, err := vnl.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("opening a conntrack netlink socket: %w", err)
	}
	p.conntrack = netlinkConntrack{h: h}
	if err := checkKernel(p.family, k.(*netlinkKernel).sock); err != nil {
		return nil, err
	}
	return p, nil
}

func inProcessNetns() error {
	self, err1 := os.Stat("/proc/self/ns/net")
	thread, err2 := os.Stat("/proc/thread-self/ns/net")
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("reading network namespaces: %w", err)
	}
	a, okA := self.Sys().(*syscall.Stat_t)
	b, okB := thread.Sys().(*syscall.Stat_t)
	if !okA || !okB || a.Dev != b.Dev || a.Ino != b.Ino {
		return errors.New("this thread is not in the process's network namespace; refusing to program nftables")
	}
	return nil
}

// probeTable is created and deleted in the same batch: the kernel checks (and loads the
// modules of) every expression, and nothing remains.
const probeTable = "svcplane-probe"

// checkKernel sends one batch holding a rule of every kind we generate and names, for each
// refused rule, the kernel feature it needs.
func checkKernel(f family, sock *batchSocket) error {
	var msgs []netlink.Message
	c, err := captureConn(&msgs)
	if err != nil {
		return err
	}
	fam := nftables.TableFamilyIPv4
	if f.addrLen == 16 {
		fam = nftables.TableFamilyIPv6
	}
	t := &nftables.Table{Name: probeTable, Family: fam}
	prio := nftables.ChainPriority(-100)
	target := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 80)
	if f.addrLen == 16 {
		target = netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), 80)
	}
	// owner[i] names the feature message i needs.
	var owner []string
	step := func(feature string, add func()) error {
		add()
		if err := c.Flush(); err != nil {
			return err
		}
		for len(owner) < len(msgs) {
			owner = append(owner, feature)
		}
		return nil
	}
	d := (&Proxier{family: f}).sets()
	epMap, _, _ := (&Proxier{family: f}).endpointMaps()
	aff := &nftables.Set{Name: "aff", Table: t, KeyType: f.addrType, HasTimeout: true, Dynamic: true, Timeout: time.Second}
	filter := &nftables.Chain{Name: "filter", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: &prio}
	nat := &nftables.Chain{Name: "nat", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: &prio}
	post := &nftables.Chain{Name: "post", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: &prio}
	rule := func(ch *nftables.Chain, r rule) func() {
		return func() { c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.build(nil)}) }
	}
	steps := []struct {
		feature string
		add     func()
	}{
		// The fib rule below jumps to filter-x, which must exist.
		{"nf_tables", func() { c.AddTable(t); c.AddChain(filter); c.AddChain(&nftables.Chain{Name: "filter-x", Table: t}) }},
		{"sets and maps (nft_set_hash, nft_set_rbtree)", func() {
			for _, s := range []*nftables.Set{d.serviceIPs, d.hairpin, epMap, aff} {
				s.Table = t
				_ = c.AddSet(s, nil)
			}
		}},
		{"nat chains (nft_chain_nat, nf_nat)", func() { c.AddChain(nat); c.AddChain(post) }},
		{"verdict maps on concatenations (nft_lookup)", rule(filter, ruleServiceIPs(f, d.serviceIPs, false))},
		{"fib (nft_fib_ipv4/nft_fib_ipv6)", rule(filter, ruleSrcLocal(vJump, "filter-x"))},
		{"reject (nft_reject_ipv4/nft_reject_ipv6)", rule(filter, ruleReject(f, true))},
		{"numgen and DNAT through a map (nft_numgen, nft_nat)", rule(nat, ruleDNATShared(f, 2, false, epMap))},
		{"DNAT (nft_nat)", rule(nat, ruleDNAT(f, target))},
		{"sets updated from the packet path with timeouts (nft_dynset)", rule(nat, ruleAffinityUpdate(f, aff, time.Second))},
		{"masquerade (nft_masq)", rule(post, ruleMasqueradeMarked())},
		{"hairpin masquerade (nft_masq, nft_lookup)", rule(post, ruleMasqueradeHairpin(f, d.hairpin))},
		{"nf_tables", func() { c.DelTable(t) }},
	}
	for _, s := range steps {
		if err := step(s.feature, s.add); err != nil {
			return fmt.Errorf("encoding the kernel check: %w", err)
		}
	}
	err = sock.send(msgs)
	var be *batchError
	if errors.As(err, &be) {
		var missing []string
		for _, i := range be.indexes {
			if i < len(owner) && !strings.Contains(strings.Join(missing, ";"), owner[i]) {
				missing = append(missing, owner[i])
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("the kernel lacks nf_tables features the nftables proxy needs: %s (%v); load the modules or use --proxy-mode=userspace",
				strings.Join(missing, "; "), be.errno)
		}
	}
	if err != nil {
		return fmt.Errorf("checking the kernel's nf_tables support: %w", err)
	}
	return nil
}
