package nftables

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// netlinkKernel sends each transaction as one netlink batch: the kernel applies it all or
// nothing. We chose netlink over the nft binary by measurement (docs/proxy-nftables.md):
// `nft -f` took 22 s to load 10k Services × 10 endpoints and 86 ms for a one-chain change
// (it re-reads the kernel's ruleset to build its cache), against the bar of 1 s and 20 ms.
type netlinkKernel struct {
	p       *Proxier
	conn    *nftables.Conn
	anonSeq uint64
}

// batchBuffer is the socket buffer for batches and their acknowledgements: a full sync of
// 10k Services is ~30 MB of messages and one ack per message comes back. The *FORCE
// options ignore net.core.{w,r}mem_max (we run as root inside the node's namespace).
const batchBuffer = 256 << 20

// NewNetlinkKernel returns the Kernel that programs the current network namespace.
func NewNetlinkKernel(p *Proxier) (Kernel, error) {
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBuffer); serr != nil {
				return
			}
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchBuffer)
		}); err != nil {
			return err
		}
		return serr
	}))
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink socket: %w", err)
	}
	return &netlinkKernel{p: p, conn: conn}, nil
}

func (k *netlinkKernel) table() *nftables.Table {
	fam := nftables.TableFamilyIPv4
	if k.p.family.nfproto == unix.NFPROTO_IPV6 {
		fam = nftables.TableFamilyIPv6
	}
	return &nftables.Table{Name: TableName, Family: fam}
}

// Apply writes tx in one batch.
func (k *netlinkKernel) Apply(tx *transaction) error {
	c := k.conn
	t := k.table()
	sIPs, sNP, nIPs, nNP, npIPs, hp := k.p.sets()
	epMap, epChains := k.p.endpointMaps()
	named := []*nftables.Set{sIPs, sNP, nIPs, nNP, npIPs, hp, epMap, epChains}
	for _, s := range named {
		s.Table = t
	}
	if tx.full {
		// Add-then-delete makes the delete valid whether or not the table exists; the
		// whole rebuild is one transaction, so packets see the old or the new table, never
		// an empty one, and conntrack entries (established connections) are untouched.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		for _, s := range named {
			if err := c.AddSet(s, nil); err != nil {
				return err
			}
		}
		bases, baseRules := k.p.baseChains()
		for _, b := range bases {
			ch := &nftables.Chain{Name: b.name, Table: t}
			if b.hook != nil {
				ch.Type, ch.Hooknum, ch.Priority = b.typ, b.hook, b.priority
			}
			c.AddChain(ch)
		}
		// Service chains exist before the base rules and map elements refer to them.
		for _, pl := range tx.plans {
			if err := k.addPlanObjects(t, pl); err != nil {
				return err
			}
		}
		for _, b := range bases {
			if err := k.addRules(t, b.name, baseRules[b.name]); err != nil {
				return err
			}
		}
		for _, pl := range tx.plans {
			if err := k.addPlanRules(t, pl); err != nil {
				return err
			}
			if err := k.addPlanElements(named, pl, false); err != nil {
				return err
			}
		}
	} else {
		// Remove the old elements first: the chains they name can then be deleted.
		for _, pl := range tx.removed {
			if err := k.addPlanElements(named, pl, true); err != nil {
				return err
			}
			for _, ch := range pl.chains {
				c.FlushChain(&nftables.Chain{Name: ch.name, Table: t})
			}
		}
		keep := map[string]bool{}
		keepSets := map[string]bool{}
		for _, pl := range tx.added {
			for _, ch := range pl.chains {
				keep[ch.name] = true
			}
			for _, s := range pl.affinitySets {
				keepSets[s.Name] = true
			}
			if err := k.addPlanObjects(t, pl); err != nil {
				return err
			}
		}
		for _, pl := range tx.added {
			if err := k.addPlanRules(t, pl); err != nil {
				return err
			}
			if err := k.addPlanElements(named, pl, false); err != nil {
				return err
			}
		}
		for _, pl := range tx.removed {
			for _, ch := range pl.chains {
				if !keep[ch.name] {
					c.DelChain(&nftables.Chain{Name: ch.name, Table: t})
				}
			}
			for _, s := range pl.affinitySets {
				if !keepSets[s.Name] {
					c.DelSet(&nftables.Set{Name: s.Name, Table: t})
				}
			}
		}
		c.FlushSet(npIPs)
		if len(tx.hairpinDel) > 0 {
			if err := c.SetDeleteElements(hp, hairpinElems(tx.hairpinDel)); err != nil {
				return err
			}
		}
	}
	var npElems, hpElems []nftables.SetElement
	for _, a := range tx.nodePortIPs {
		npElems = append(npElems, nftables.SetElement{Key: a.AsSlice()})
	}
	hpElems = hairpinElems(tx.hairpin)
	if len(npElems) > 0 {
		if err := c.SetAddElements(npIPs, npElems); err != nil {
			return err
		}
	}
	if len(hpElems) > 0 {
		if err := c.SetAddElements(hp, hpElems); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables transaction (full=%v): %w", tx.full, err)
	}
	return nil
}

// addPlanObjects adds the chains and affinity sets of a plan (adding an existing one is a
// no-op in nf_tables, which partial syncs rely on; affinity sets keep their clients).
func (k *netlinkKernel) addPlanObjects(t *nftables.Table, pl *servicePlan) error {
	for _, s := range pl.affinitySets {
		s.Table = t
		if err := k.conn.AddSet(s, nil); err != nil {
			return err
		}
	}
	for _, ch := range pl.chains {
		k.conn.AddChain(&nftables.Chain{Name: ch.name, Table: t})
	}
	return nil
}

func (k *netlinkKernel) addPlanRules(t *nftables.Table, pl *servicePlan) error {
	for _, ch := range pl.chains {
		if err := k.addRules(t, ch.name, ch.rules); err != nil {
			return err
		}
	}
	return nil
}

func (k *netlinkKernel) addRules(t *nftables.Table, chain string, rules []rule) error {
	ch := &nftables.Chain{Name: chain, Table: t}
	for _, r := range rules {
		var anon []*nftables.Set
		for _, a := range r.anon {
			// A fresh copy per transaction: AddSet assigns the ID the rule refers to.
			// An explicit name: given "__map%d" the kernel scans every set of the table
			// for a free number, which made 10k Services take 30 s (quadratic).
			k.anonSeq++
			s := *a.set
			// The library keeps a name only when we choose the transaction ID too; ours
			// live above the library's own counter.
			s.Table, s.ID = t, uint32(1<<30+k.anonSeq%(1<<29))
			s.Name = fmt.Sprintf("__m%d", k.anonSeq)
			if err := k.conn.AddSet(&s, a.elems); err != nil {
				return err
			}
			anon = append(anon, &s)
		}
		k.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.build(anon)})
	}
	return nil
}

// addPlanElements adds (or deletes) a plan's map elements.
func (k *netlinkKernel) addPlanElements(named []*nftables.Set, pl *servicePlan, del bool) error {
	sIPs, sNP, nIPs, nNP, epMap, epChains := named[0], named[1], named[2], named[3], named[6], named[7]
	op := k.conn.SetAddElements
	if del {
		op = k.conn.SetDeleteElements
	}
	ipElems := func(m map[ipProtoPort]string) []nftables.SetElement {
		var out []nftables.SetElement
		for key, v := range m {
			out = append(out, nftables.SetElement{Key: ipProtoPortKey(key), VerdictData: verdictData(v)})
		}
		return out
	}
	npElems := func(m map[protoPort]string) []nftables.SetElement {
		var out []nftables.SetElement
		for key, v := range m {
			out = append(out, nftables.SetElement{Key: protoPortKey(key), VerdictData: verdictData(v)})
		}
		return out
	}
	var epElems, chainElems []nftables.SetElement
	for i, t := range pl.endpoints {
		epElems = append(epElems, nftables.SetElement{Key: idIndexKey(pl.id, uint32(i)),
			Val: append(pad4(t.Addr().AsSlice()), pad4(portBytes(t.Port()))...)})
	}
	for i, ch := range pl.endpointChains {
		chainElems = append(chainElems, nftables.SetElement{Key: idIndexKey(pl.id, uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: ch}})
	}
	for _, x := range []struct {
		s *nftables.Set
		e []nftables.SetElement
	}{{sIPs, ipElems(pl.serviceIPs)}, {nIPs, ipElems(pl.noEndpointIP)}, {sNP, npElems(pl.nodePorts)}, {nNP, npElems(pl.noEndpointNP)},
		{epMap, epElems}, {epChains, chainElems}} {
		if len(x.e) == 0 {
			continue
		}
		if err := op(x.s, x.e); err != nil {
			return err
		}
	}
	return nil
}

func hairpinElems(addrs []netip.Addr) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, nftables.SetElement{Key: append(pad4(a.AsSlice()), pad4(a.AsSlice())...)})
	}
	return out
}

func idIndexKey(id, idx uint32) []byte {
	return append(binaryutil.NativeEndian.PutUint32(id), binaryutil.NativeEndian.PutUint32(idx)...)
}

func ipProtoPortKey(k ipProtoPort) []byte {
	b := pad4(k.ip.AsSlice())
	b = append(b, k.proto, 0, 0, 0)
	return append(b, pad4(portBytes(k.port))...)
}

func protoPortKey(k protoPort) []byte {
	return append([]byte{k.proto, 0, 0, 0}, pad4(portBytes(k.port))...)
}

func verdictData(v string) *expr.Verdict {
	kind, chain := parseVerdict(v)
	return verdictExpr(kind, chain)
}
