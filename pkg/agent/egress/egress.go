// Package egress makes Pods' traffic that leaves the cluster look like the node's own: it
// masquerades packets from this node's pod CIDRs to anywhere outside the cluster CIDRs, as the
// bridge CNI plugin's ipMasq and kindnet do. Pods of other nodes still see a Pod's own address
// (nodes route pod CIDRs to each other), while a host off the cluster, which has no route back
// to the pod CIDRs, sees the node's. Service traffic is the proxy's business: after its DNAT
// to a Pod the destination is inside the cluster CIDR, and its own masquerade rules come first
// when they apply.
//
// The rules live in a table of their own per IP family, `svcplane-egress`, with one rule:
//
//	ip saddr <pod CIDR> ip daddr != <cluster CIDR> oifname != "<bridge>" masquerade
//
// replaced whole in one transaction, so restarts and changed flags converge.
package egress

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the table of each family.
const TableName = "svcplane-egress"

// Config is what Ensure needs.
type Config struct {
	// PodCIDRs are this node's: at most one per family.
	PodCIDRs []netip.Prefix
	// ClusterCIDRs are every node's Pods: traffic to them keeps the Pod's address.
	ClusterCIDRs []netip.Prefix
	// Bridge is the pod bridge: traffic between Pods of this node never leaves it routed
	// elsewhere, but a Pod reaching another through a Service is routed back out of it.
	Bridge string
	// Disabled removes the tables instead.
	Disabled bool
}

// Ensure makes the network namespace of the calling process hold exactly the tables cfg asks
// for, in one transaction: a table for each family of PodCIDRs that has a cluster CIDR too, none
// for the others.
func Ensure(cfg Config) error {
	// The library dials from a goroutine of its own, which may run on a thread another part
	// of the agent moved into a Pod's namespace: name this one explicitly. A locked thread is
	// in the process's namespace unless this goroutine moved it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer unix.Close(nsfd)
	c, err := nftables.New(nftables.WithNetNSFd(nsfd))
	if err != nil {
		return err
	}
	for _, fam := range []family{ipv4, ipv6} {
		t := &nftables.Table{Name: TableName, Family: fam.table}
		// Adding first makes the delete succeed whether or not the table exists.
		c.AddTable(t)
		c.DelTable(t)
		if cfg.Disabled {
			continue
		}
		var cluster []netip.Prefix
		for _, p := range cfg.ClusterCIDRs {
			if p.Addr().Is6() == fam.is6 {
				cluster = append(cluster, p.Masked())
			}
		}
		for _, pods := range cfg.PodCIDRs {
			// Without the family's cluster range, Pods of other nodes could not be told
			// from the outside: leave that family alone rather than hide their addresses.
			if pods.Addr().Is6() != fam.is6 || len(cluster) == 0 {
				continue
			}
			c.AddTable(t)
			chain := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
			exprs := fam.match(fam.srcOff, pods.Masked(), expr.CmpOpEq)
			for _, p := range cluster {
				exprs = append(exprs, fam.match(fam.dstOff, p, expr.CmpOpNeq)...)
			}
			exprs = append(exprs,
				&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(cfg.Bridge)},
				&expr.Masq{})
			c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("writing the %s tables: %w", TableName, err)
	}
	return nil
}

type family struct {
	table          nftables.TableFamily
	is6            bool
	srcOff, dstOff uint32
	addrLen        uint32
}

var (
	ipv4 = family{table: nftables.TableFamilyIPv4, srcOff: 12, dstOff: 16, addrLen: 4}
	ipv6 = family{table: nftables.TableFamilyIPv6, is6: true, srcOff: 8, dstOff: 24, addrLen: 16}
)

// match compares the address at offset of the network header with prefix.
func (f family) match(offset uint32, prefix netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := net.CIDRMask(prefix.Bits(), int(f.addrLen)*8)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: f.addrLen},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.addrLen, Mask: mask, Xor: make([]byte, f.addrLen)},
		&expr.Cmp{Op: op, Register: 1, Data: prefix.Addr().AsSlice()},
	}
}

// ifname is name as the kernel compares interface names: NUL-padded to IFNAMSIZ.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
