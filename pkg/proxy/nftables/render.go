package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Dump renders the table the proxier has programmed in the shape of `nft list table`: the
// same set, map and chain blocks, rules and element spellings, in a canonical order (sets
// and maps by name, then chains by name, elements sorted, one per line) so that two dumps
// diff cleanly. CanonicalListing brings the kernel's own listing into the same order; the
// kernel tests compare the two, so this view cannot drift from what the kernel holds.
func (p *Proxier) Dump() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.renderListing()
}

// listingBlock is one set, map or chain of a listing.
type listingBlock struct {
	kind, name string // "set" | "map" | "chain"
	// lines are the block's lines before its elements: a set's type and flags, a chain's
	// hook line and rules, in order.
	lines    []string
	elements []string
}

func (p *Proxier) renderListing() string {
	f := p.family
	d := p.sets()
	epMap, scMap, epChains := p.endpointMaps()
	blocks := map[string]*listingBlock{}
	addSet := func(s *nftables.Set) *listingBlock {
		kind, typ := "set", s.KeyType.Name
		if s.IsMap {
			kind, typ = "map", typ+" : "+s.DataType.Name
		}
		b := &listingBlock{kind: kind, name: s.Name, lines: []string{"type " + typ}}
		if s.HasTimeout {
			// Affinity sets: the kernel reports the default size nft gives dynamic sets.
			b.lines = append(b.lines, "size 65535", "flags dynamic,timeout", "timeout "+durationText(s.Timeout))
		}
		blocks[kind+" "+s.Name] = b
		return b
	}
	for _, s := range append(d.all(), epMap, scMap, epChains) {
		addSet(s)
	}
	addChain := func(name string, head []string, rules []rule) {
		b := &listingBlock{kind: "chain", name: name, lines: head}
		for _, r := range rules {
			b.lines = append(b.lines, r.text)
		}
		blocks["chain "+name] = b
	}
	bases, baseRules := p.baseChains()
	for _, c := range bases {
		var head []string
		if c.hook != nil {
			head = []string{fmt.Sprintf("type %s hook %s priority %s; policy accept;", c.typ, hookName(c.hook), priorityText(*c.hook, *c.priority))}
		}
		addChain(c.name, head, baseRules[c.name])
	}
	for name, c := range p.shared {
		addChain(name, nil, p.sharedRules(c))
	}
	elems := func(set string) *[]string { return &blocks["map "+set].elements }
	hairpin := map[netip.Addr]bool{}
	for _, pl := range p.programmed {
		for _, c := range pl.chains {
			addChain(c.name, nil, c.rules)
		}
		for _, s := range pl.affinitySets {
			addSet(s)
		}
		for k, v := range pl.serviceIPs {
			*elems(mapServiceIPs) = append(*elems(mapServiceIPs), ipProtoPortText(k)+" : "+v)
		}
		for k, v := range pl.noEndpointIP {
			*elems(mapNoEndpointIPs) = append(*elems(mapNoEndpointIPs), ipProtoPortText(k)+" : "+v)
		}
		for k, v := range pl.nodePorts {
			*elems(mapServiceNodePort) = append(*elems(mapServiceNodePort), protoPortText(k)+" : "+v)
		}
		for k, v := range pl.noEndpointNP {
			*elems(mapNoEndpointNodeP) = append(*elems(mapNoEndpointNodeP), protoPortText(k)+" : "+v)
		}
		for set, m := range map[string]map[ipProtoPort][]netip.AddrPort{mapEndpoints: pl.endpoints, mapShortCircuit: pl.shortCircuit} {
			for fe, targets := range m {
				for i, t := range targets {
					*elems(set) = append(*elems(set), fmt.Sprintf("%s . %s : %s . %d", ipProtoPortText(fe), markText(uint32(i)), t.Addr(), t.Port()))
				}
			}
		}
		for id, chains := range pl.endpointChains {
			for i, c := range chains {
				*elems(mapEndpointChains) = append(*elems(mapEndpointChains), fmt.Sprintf("%s . %s : goto %s", markText(id), markText(uint32(i)), c))
			}
		}
		for _, a := range pl.hairpin {
			hairpin[a] = true
		}
	}
	for _, a := range p.cfg.NodePortAddresses {
		blocks["set "+setNodePortIPs].elements = append(blocks["set "+setNodePortIPs].elements, a.String())
	}
	for a := range hairpin {
		blocks["set "+setHairpin].elements = append(blocks["set "+setHairpin].elements, a.String()+" . "+a.String())
	}
	return formatListing(fmt.Sprintf("table %s %s", f.name, TableName), blocks)
}

// formatListing writes blocks in canonical order: sets and maps by name, then chains by name,
// each block's elements sorted and one per line.
func formatListing(header string, blocks map[string]*listingBlock) string {
	list := make([]*listingBlock, 0, len(blocks))
	for _, b := range blocks {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b *listingBlock) int {
		if (a.kind == "chain") != (b.kind == "chain") {
			if a.kind == "chain" {
				return 1
			}
			return -1
		}
		return strings.Compare(a.name, b.name)
	})
	var out strings.Builder
	out.WriteString(header + " {\n")
	for _, b := range list {
		fmt.Fprintf(&out, "\t%s %s {\n", b.kind, b.name)
		for _, l := range b.lines {
			out.WriteString("\t\t" + l + "\n")
		}
		if len(b.elements) > 0 {
			els := slices.Clone(b.elements)
			slices.Sort(els)
			out.WriteString("\t\telements = {\n")
			for _, e := range els {
				out.WriteString("\t\t\t" + e + "\n")
			}
			out.WriteString("\t\t}\n")
		}
		out.WriteString("\t}\n")
	}
	out.WriteString("}\n")
	return out.String()
}

// CanonicalListing reorders the output of `nft list table` (one table) the way Dump orders
// its own: blocks by kind and name, elements sorted one per line. Block contents are kept as
// printed. It is how tests compare Dump with the kernel, and useful to diff two listings.
func CanonicalListing(nftOutput string) (string, error) {
	var header string
	blocks := map[string]*listingBlock{}
	var cur *listingBlock
	var inElements bool
	var pending strings.Builder
	for _, raw := range strings.Split(nftOutput, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "":
		case inElements:
			pending.WriteString(" " + line)
			if strings.HasSuffix(line, "}") {
				inElements = false
				cur.elements = splitElements(pending.String())
			}
		case header == "":
			if !strings.HasPrefix(line, "table ") || !strings.HasSuffix(line, "{") {
				return "", fmt.Errorf("listing does not start with a table: %q", line)
			}
			header = strings.TrimSpace(strings.TrimSuffix(line, "{"))
		case cur == nil && line == "}":
			header += "\x00" // the table is closed; anything after it is an error
		case cur == nil:
			f := strings.Fields(line)
			if len(f) != 3 || f[2] != "{" || strings.HasSuffix(header, "\x00") {
				return "", fmt.Errorf("unexpected line %q", line)
			}
			cur = &listingBlock{kind: f[0], name: f[1]}
			blocks[f[0]+" "+f[1]] = cur
		case line == "}":
			cur = nil
		case strings.HasPrefix(line, "elements = {"):
			pending.Reset()
			pending.WriteString(strings.TrimPrefix(line, "elements = {"))
			if strings.HasSuffix(line, "}") {
				cur.elements = splitElements(pending.String())
			} else {
				inElements = true
			}
		default:
			cur.lines = append(cur.lines, line)
		}
	}
	if header == "" || cur != nil || inElements {
		return "", fmt.Errorf("truncated listing")
	}
	return formatListing(strings.TrimSuffix(header, "\x00"), blocks), nil
}

// splitElements splits "a, b, c }" into its elements (ours never contain commas or braces).
func splitElements(s string) []string {
	s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "}"))
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func ipProtoPortText(k ipProtoPort) string {
	return fmt.Sprintf("%s . %s . %d", k.ip, protoName(k.proto), k.port)
}

func protoPortText(k protoPort) string { return fmt.Sprintf("%s . %d", protoName(k.proto), k.port) }

// priorityText spells a base chain priority as nft does: by the standard name valid for the
// hook when within 10 of it ("dstnat - 10"), else as a number.
func priorityText(hook nftables.ChainHook, prio nftables.ChainPriority) string {
	type named struct {
		name string
		v    int32
	}
	std := []named{{"raw", -300}, {"mangle", -150}, {"filter", 0}, {"security", 50}}
	switch hook {
	case *nftables.ChainHookPrerouting:
		std = append(std, named{"dstnat", -100})
	case *nftables.ChainHookPostrouting:
		std = append(std, named{"srcnat", 100})
	}
	for _, s := range std {
		switch off := int32(prio) - s.v; {
		case off == 0:
			return s.name
		case off > 0 && off <= 10:
			return fmt.Sprintf("%s + %d", s.name, off)
		case off < 0 && off >= -10:
			return fmt.Sprintf("%s - %d", s.name, -off)
		}
	}
	return fmt.Sprint(int32(prio))
}
