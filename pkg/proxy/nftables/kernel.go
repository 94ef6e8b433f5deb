package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/svcplane/svcplane/pkg/proxy"
)

// netlinkKernel sends each transaction as one netlink batch: the kernel applies it all or
// nothing. We chose netlink over the nft binary by measurement (docs/proxy.md): `nft -f`
// took 22 s to load 10k Services × 10 endpoints and 86 ms for a one-chain change (it re-reads
// the kernel's ruleset to build its cache), against the bar of 1 s and 20 ms.
type netlinkKernel struct {
	p    *Proxier
	sock *batchSocket
	// lister reads what the table holds before a full sync; its socket was opened in the
	// node's namespace, like sock.
	lister *nftables.Conn
	// conn encodes one transaction's messages (see captureConn); msgs receives them.
	conn *nftables.Conn
	msgs []netlink.Message
}

// batchBuffer is the send buffer: a full sync of 10k Services × 10 endpoints is ~10 MB.
const batchBuffer = 256 << 20

// NewNetlinkKernel returns the Kernel that programs the network namespace of the calling
// thread: call it on a thread locked into the node's namespace (the socket stays there).
func NewNetlinkKernel(p *Proxier) (Kernel, error) {
	sock, err := newBatchSocket()
	if err != nil {
		return nil, err
	}
	// The library dials from a goroutine of its own, which may run on any thread: name the
	// namespace explicitly rather than trust the thread it lands on.
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	defer unix.Close(nsfd)
	lister, err := nftables.New(nftables.WithNetNSFd(nsfd), nftables.AsLasting())
	if err != nil {
		sock.Close()
		return nil, fmt.Errorf("opening a netlink socket to list the ruleset: %w", err)
	}
	return &netlinkKernel{p: p, sock: sock, lister: lister}, nil
}

// tableObjects are the chains and sets our table holds in the kernel.
type tableObjects struct {
	exists bool
	chains []string
	sets   []*nftables.Set
}

// listTable reads the names of our table's chains and sets (not their contents: a few
// dozen objects however many Services there are, plus two per affinity endpoint).
func (k *netlinkKernel) listTable(t *nftables.Table) (tableObjects, error) {
	var objs tableObjects
	if _, err := k.lister.ListTableOfFamily(t.Name, t.Family); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return objs, nil
		}
		return objs, fmt.Errorf("looking up table %s: %w", t.Name, err)
	}
	objs.exists = true
	chains, err := k.lister.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return objs, fmt.Errorf("listing chains: %w", err)
	}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == t.Name {
			objs.chains = append(objs.chains, c.Name)
		}
	}
	sets, err := k.lister.GetSets(t)
	if err != nil {
		return objs, fmt.Errorf("listing sets: %w", err)
	}
	for _, s := range sets {
		// Anonymous sets belong to their rule and go with it.
		if !strings.HasPrefix(s.Name, "__") {
			objs.sets = append(objs.sets, s)
		}
	}
	return objs, nil
}

// clearForFullSync empties the existing table for a full rebuild in the same transaction,
// keeping the affinity sets that the new plans use with the same timeout: their elements
// are the clients currently pinned to an endpoint, which a rebuild (the periodic resync,
// or a restarted proxy) must not forget. Everything else goes: rules first (they hold
// references to sets and chains), then sets and maps (map elements hold references to
// chains), then the chains nobody re-adds. Kept chains are only flushed, so base chains
// stay registered on their hooks.
func (k *netlinkKernel) clearForFullSync(t *nftables.Table, objs tableObjects, tx *transaction, bases []baseChain) {
	c := k.conn
	keepSets := map[string]*nftables.Set{}
	keepChains := map[string]bool{}
	for _, b := range bases {
		keepChains[b.name] = true
	}
	for _, sc := range tx.shared {
		keepChains[sc.name()] = true
	}
	for _, pl := range tx.plans {
		for _, s := range pl.affinitySets {
			keepSets[s.Name] = s
		}
		for _, ch := range pl.chains {
			keepChains[ch.name] = true
		}
	}
	for _, name := range objs.chains {
		c.FlushChain(&nftables.Chain{Name: name, Table: t})
	}
	for _, s := range objs.sets {
		if want, ok := keepSets[s.Name]; ok && want.Timeout == s.Timeout && s.HasTimeout {
			continue
		}
		c.DelSet(&nftables.Set{Name: s.Name, Table: t})
	}
	for _, name := range objs.chains {
		if !keepChains[name] {
			c.DelChain(&nftables.Chain{Name: name, Table: t})
		}
	}
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
	k.msgs = k.msgs[:0]
	c, err := captureConn(&k.msgs)
	if err != nil {
		return err
	}
	k.conn = c
	t := k.table()
	d := k.p.sets()
	epMap, scMap, epChains := k.p.endpointMaps()
	named := append(d.all(), epMap, scMap, epChains)
	for _, s := range named {
		s.Table = t
	}
	// Chains exist before the rules and elements that name them, and every rule exists
	// before the elements: a rule that looks up a map makes the kernel check each element
	// already in it, so adding elements last keeps that check to the few shared rules.
	if tx.full {
		// The whole rebuild is one transaction, so packets see the old or the new rules,
		// never none, and conntrack entries (established connections) are untouched. An
		// existing table is emptied object by object, keeping affinity sets; if it cannot
		// be listed, it is replaced whole (add-then-delete makes the delete valid whether or
		// not it exists), which forgets affinity.
		bases, baseRules := k.p.baseChains()
		if objs, err := k.listTable(t); err == nil {
			c.AddTable(t)
			k.clearForFullSync(t, objs, tx, bases)
		} else {
			c.AddTable(t)
			c.DelTable(t)
			c.AddTable(t)
		}
		for _, s := range named {
			if err := c.AddSet(s, nil); err != nil {
				return err
			}
		}
		for _, b := range bases {
			ch := &nftables.Chain{Name: b.name, Table: t}
			if b.hook != nil {
				ch.Type, ch.Hooknum, ch.Priority = b.typ, b.hook, b.priority
			}
			c.AddChain(ch)
		}
		for _, sc := range tx.shared {
			c.AddChain(&nftables.Chain{Name: sc.name(), Table: t})
		}
		for _, pl := range tx.plans {
			if err := k.addPlanObjects(t, pl); err != nil {
				return err
			}
		}
		for _, b := range bases {
			k.addRules(t, b.name, baseRules[b.name])
		}
	} else {
		// Remove the old elements first: the chains they name can then be deleted.
		if err := k.flushLibrary(); err != nil {
			return err
		}
		k.addElements(tx.delElems, true)
		for _, pl := range tx.removed {
			for _, ch := range pl.chains {
				c.FlushChain(&nftables.Chain{Name: ch.name, Table: t})
			}
		}
		for _, sc := range tx.shared {
			c.AddChain(&nftables.Chain{Name: sc.name(), Table: t})
		}
		for _, pl := range tx.plans {
			if err := k.addPlanObjects(t, pl); err != nil {
				return err
			}
		}
	}
	for _, sc := range tx.shared {
		k.addRules(t, sc.name(), k.p.sharedRules(sc))
	}
	for _, pl := range tx.plans {
		for _, ch := range pl.chains {
			k.addRules(t, ch.name, ch.rules)
		}
	}
	if err := k.flushLibrary(); err != nil {
		return err
	}
	if tx.full {
		k.addAllElements(tx.plans)
	} else {
		k.addElements(tx.addElems, false)
		keep := map[string]bool{}
		keepSets := map[string]bool{}
		for _, pl := range tx.plans {
			for _, ch := range pl.chains {
				keep[ch.name] = true
			}
			for _, s := range pl.affinitySets {
				keepSets[s.Name] = true
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
		c.FlushSet(d.nodePortIPs)
		if err := k.flushLibrary(); err != nil {
			return err
		}
		if len(tx.hairpinDel) > 0 {
			l := k.list(setHairpin, true)
			for _, a := range tx.hairpinDel {
				l.add(hairpinKey(a), nil, nil)
			}
			k.msgs = append(k.msgs, l.messages()...)
		}
	}
	np := k.list(setNodePortIPs, false)
	for _, a := range tx.nodePortIPs {
		np.add(a.AsSlice(), nil, nil)
	}
	hp := k.list(setHairpin, false)
	for _, a := range tx.hairpin {
		hp.add(hairpinKey(a), nil, nil)
	}
	k.msgs = append(k.msgs, np.messages()...)
	k.msgs = append(k.msgs, hp.messages()...)
	if err := k.sock.send(k.msgs); err != nil {
		kind := "partial"
		if tx.full {
			kind = "full"
		}
		return fmt.Errorf("%s sync: %w", kind, err)
	}
	return nil
}

// flushLibrary appends the messages the library has encoded so far, keeping their order
// with the element messages we encode ourselves.
func (k *netlinkKernel) flushLibrary() error {
	if err := k.conn.Flush(); err != nil {
		return fmt.Errorf("encoding the nftables transaction: %w", err)
	}
	return nil
}

func (k *netlinkKernel) list(set string, del bool) *elemList {
	return &elemList{family: k.p.family.nfproto, table: TableName, set: set, del: del}
}

// addElements adds (or deletes) elements of the named maps, grouped by map in a fixed
// order, so that a failing batch fails the same way twice.
func (k *netlinkKernel) addElements(elems map[elemKey]elemValue, del bool) {
	lists := map[string]*elemList{}
	for key, v := range elems {
		l := lists[key.set]
		if l == nil {
			l = k.list(key.set, del)
			lists[key.set] = l
		}
		var verdict *expr.Verdict
		if v.verdict != "" {
			verdict = verdictData(v.verdict)
		}
		l.add([]byte(key.key), []byte(v.val), verdict)
	}
	for _, name := range slices.Sorted(maps.Keys(lists)) {
		k.msgs = append(k.msgs, lists[name].messages()...)
	}
}

// addAllElements adds every plan's elements, encoding them directly (a full sync of 10k
// Services is over 100k elements: no intermediate map).
func (k *netlinkKernel) addAllElements(plans map[proxy.ServicePortName]*servicePlan) {
	sIPs, sNP := k.list(mapServiceIPs, false), k.list(mapServiceNodePort, false)
	nIPs, nNP := k.list(mapNoEndpointIPs, false), k.list(mapNoEndpointNodeP, false)
	eps, sc, epc := k.list(mapEndpoints, false), k.list(mapShortCircuit, false), k.list(mapEndpointChains, false)
	key := make([]byte, 0, 32)
	val := make([]byte, 0, 20)
	verdicts := map[string]*expr.Verdict{}
	verdict := func(v string) *expr.Verdict {
		if x, ok := verdicts[v]; ok {
			return x
		}
		x := verdictData(v)
		verdicts[v] = x
		return x
	}
	for _, pl := range plans {
		for fe, v := range pl.serviceIPs {
			sIPs.add(appendIPProtoPort(key[:0], fe), nil, verdict(v))
		}
		for fe, v := range pl.noEndpointIP {
			nIPs.add(appendIPProtoPort(key[:0], fe), nil, verdict(v))
		}
		for pp, v := range pl.nodePorts {
			sNP.add(protoPortKey(pp), nil, verdict(v))
		}
		for pp, v := range pl.noEndpointNP {
			nNP.add(protoPortKey(pp), nil, verdict(v))
		}
		for _, x := range []struct {
			l *elemList
			m map[ipProtoPort][]netip.AddrPort
		}{{eps, pl.endpoints}, {sc, pl.shortCircuit}} {
			for fe, targets := range x.m {
				for i, t := range targets {
					kb := binary.NativeEndian.AppendUint32(appendIPProtoPort(key[:0], fe), uint32(i))
					vb := pad4(append(val[:0], t.Addr().AsSlice()...))
					vb = append(vb, byte(t.Port()>>8), byte(t.Port()), 0, 0)
					x.l.add(kb, vb, nil)
				}
			}
		}
		for id, chains := range pl.endpointChains {
			for i, ch := range chains {
				epc.add(idIndexKey(id, uint32(i)), nil, verdict("goto "+ch))
			}
		}
	}
	for _, l := range []*elemList{sIPs, sNP, nIPs, nNP, eps, sc, epc} {
		k.msgs = append(k.msgs, l.messages()...)
	}
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

func (k *netlinkKernel) addRules(t *nftables.Table, chain string, rules []rule) {
	ch := &nftables.Chain{Name: chain, Table: t}
	for _, r := range rules {
		k.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.build(nil)})
	}
}

func hairpinKey(a netip.Addr) []byte {
	return append(pad4(a.AsSlice()), pad4(a.AsSlice())...)
}

func idIndexKey(id, idx uint32) []byte {
	return append(binaryutil.NativeEndian.PutUint32(id), binaryutil.NativeEndian.PutUint32(idx)...)
}

// frontendIndexKey is an @endpoints key: address . protocol . port . index, each padded to
// 4 bytes; the index in host order, as numgen writes it.
func frontendIndexKey(fe ipProtoPort, idx uint32) []byte {
	return binary.NativeEndian.AppendUint32(appendIPProtoPort(nil, fe), idx)
}

// targetValue is an @endpoints value: address . port, each padded to 4 bytes.
func targetValue(t netip.AddrPort) []byte {
	return append(pad4(t.Addr().AsSlice()), pad4(portBytes(t.Port()))...)
}

func ipProtoPortKey(k ipProtoPort) []byte { return appendIPProtoPort(nil, k) }

// appendIPProtoPort appends the key address . protocol . port, each padded to 4 bytes.
func appendIPProtoPort(b []byte, k ipProtoPort) []byte {
	b = pad4(append(b, k.ip.AsSlice()...))
	return append(b, k.proto, 0, 0, 0, byte(k.port>>8), byte(k.port), 0, 0)
}

func parseIPProtoPortKey(b string) ipProtoPort {
	n := len(b) - 8
	ip, _ := netip.AddrFromSlice([]byte(b[:n]))
	return ipProtoPort{ip: ip, proto: b[n], port: binary.BigEndian.Uint16([]byte(b[n+4 : n+6]))}
}

func protoPortKey(k protoPort) []byte {
	return append([]byte{k.proto, 0, 0, 0}, pad4(portBytes(k.port))...)
}

func parseProtoPortKey(b string) protoPort {
	return protoPort{proto: b[0], port: binary.BigEndian.Uint16([]byte(b[4:6]))}
}

func verdictData(v string) *expr.Verdict {
	kind, chain := parseVerdict(v)
	return verdictExpr(kind, chain)
}
