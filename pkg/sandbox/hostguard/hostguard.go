// Package hostguard records the host's own network configuration (root namespace routes,
// policy rules, link names, packet-filter rules and forwarding sysctls) so that the sandbox can
// prove it changed none of it: take a Snapshot before building, compare after tearing down.
//
// It only reads. Text comes from `ip`, and from `nft` / `iptables-save` when installed; a
// missing `nft` counts as an empty ruleset (nothing can have added rules without it, or without
// some other tool we would then see in iptables-save) and is noted in Snapshot.Notes. Counters
// and timers that change on their own are masked so that a difference means a real change of
// configuration.
package hostguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Snapshot is the host's network configuration, one section per source, each a sorted list
// of normalised lines.
type Snapshot struct {
	Sections map[string][]string `json:"sections"`
	// Notes says what could not be read and how it was counted, for the user to see.
	Notes []string `json:"notes,omitempty"`
}

type source struct {
	section string
	command []string // run if the binary exists; "ip" is required, the others optional
	file    string   // or read this file
	lines   func(string) []string
	// emptyIfMissing records a missing command as an empty section (with a note) rather than
	// leaving the section out.
	emptyIfMissing bool
}

var sources = []source{
	{section: "links", command: []string{"ip", "-o", "link", "show"}, lines: linkNames},
	{section: "netns", command: []string{"ip", "netns", "list"}, lines: netnsNames},
	{section: "routes4", command: []string{"ip", "-4", "route", "show", "table", "all"}, lines: routeLines},
	{section: "routes6", command: []string{"ip", "-6", "route", "show", "table", "all"}, lines: routeLines},
	{section: "rules4", command: []string{"ip", "-4", "rule", "show"}, lines: plainLines},
	{section: "rules6", command: []string{"ip", "-6", "rule", "show"}, lines: plainLines},
	{section: "nftables", command: []string{"nft", "list", "ruleset"}, lines: filterLines, emptyIfMissing: true},
	{section: "iptables", command: []string{"iptables-save"}, lines: filterLines},
	{section: "ip6tables", command: []string{"ip6tables-save"}, lines: filterLines},
	{section: "ipv4.ip_forward", file: "/proc/sys/net/ipv4/ip_forward", lines: plainLines},
	{section: "ipv6.forwarding", file: "/proc/sys/net/ipv6/conf/all/forwarding", lines: plainLines},
}

// Take reads the host's configuration. It must run on a goroutine that is not locked into
// another namespace (any ordinary goroutine), so the commands it starts see the host.
func Take(ctx context.Context) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := &Snapshot{Sections: map[string][]string{}}
	for _, src := range sources {
		text, ok, err := src.read(ctx)
		if err != nil {
			return nil, fmt.Errorf("recording the host's %s: %w", src.section, err)
		}
		if !ok && src.emptyIfMissing {
			s.Notes = append(s.Notes, fmt.Sprintf("%s is not installed: the %s ruleset is taken to be empty", src.command[0], src.section))
			s.Sections[src.section] = []string{}
			continue
		}
		if !ok {
			continue
		}
		lines := src.lines(text)
		sort.Strings(lines)
		s.Sections[src.section] = lines
	}
	return s, nil
}

func (src source) read(ctx context.Context) (string, bool, error) {
	if src.file != "" {
		b, err := os.ReadFile(src.file)
		if errors.Is(err, os.ErrNotExist) {
			return "", false, nil
		}
		return string(b), err == nil, err
	}
	if _, err := exec.LookPath(src.command[0]); err != nil {
		if src.command[0] == "ip" {
			return "", false, errors.New("the ip command (iproute2) is missing: install it")
		}
		return "", false, nil
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, src.command[0], src.command[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", false, fmt.Errorf("%s: %w: %s", strings.Join(src.command, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), true, nil
}

// Ignore tells Diff to skip a line of a section, e.g. network namespaces that other sandboxes
// create and remove while ours is up.
type Ignore func(section, line string) bool

// Diff lists what differs between two snapshots, one "section: +line" or "section: -line"
// entry each; nil means equal. Lines any of ignore matches are left out.
func Diff(before, after *Snapshot, ignore ...Ignore) []string {
	sections := map[string]bool{}
	for k := range before.Sections {
		sections[k] = true
	}
	for k := range after.Sections {
		sections[k] = true
	}
	names := make([]string, 0, len(sections))
	for k := range sections {
		names = append(names, k)
	}
	sort.Strings(names)
	var diff []string
	for _, k := range names {
		removed, added := multisetDiff(before.Sections[k], after.Sections[k])
		for _, l := range removed {
			if !ignored(ignore, k, l) {
				diff = append(diff, fmt.Sprintf("%s: -%s", k, l))
			}
		}
		for _, l := range added {
			if !ignored(ignore, k, l) {
				diff = append(diff, fmt.Sprintf("%s: +%s", k, l))
			}
		}
	}
	return diff
}

func ignored(ignore []Ignore, section, line string) bool {
	for _, fn := range ignore {
		if fn(section, line) {
			return true
		}
	}
	return false
}

// Unchanged returns an error naming every difference between before and after.
func Unchanged(before, after *Snapshot, ignore ...Ignore) error {
	diff := Diff(before, after, ignore...)
	if len(diff) == 0 {
		return nil
	}
	return fmt.Errorf("the host's network configuration changed (-before +after):\n  %s", strings.Join(diff, "\n  "))
}

func multisetDiff(a, b []string) (onlyA, onlyB []string) {
	count := map[string]int{}
	for _, l := range a {
		count[l]++
	}
	for _, l := range b {
		count[l]--
	}
	for _, l := range a {
		if count[l] > 0 {
			onlyA = append(onlyA, l)
			count[l]--
		}
	}
	for _, l := range b {
		if count[l] < 0 {
			onlyB = append(onlyB, l)
			count[l]++
		}
	}
	return onlyA, onlyB
}

func plainLines(text string) []string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// linkNames keeps only interface names: flags, state and counters change on their own.
// "ip -o link" prints "2: eth0@if5: <...>"; the name is the second field without "@peer".
func linkNames(text string) []string {
	var names []string
	for _, l := range plainLines(text) {
		fields := strings.Fields(l)
		if len(fields) < 2 {
			continue
		}
		name := strings.TrimSuffix(fields[1], ":")
		name, _, _ = strings.Cut(name, "@")
		names = append(names, name)
	}
	return names
}

// netnsNames keeps only namespace names: `ip netns list` appends "(id: N)" once a namespace
// has a peer id, which changes as interfaces come and go.
func netnsNames(text string) []string {
	var names []string
	for _, l := range plainLines(text) {
		names = append(names, strings.Fields(l)[0])
	}
	return names
}

var routeTimers = regexp.MustCompile(`\s+expires \S+`)

// routeLines masks the remaining lifetime of routes learned from router advertisements.
func routeLines(text string) []string {
	lines := plainLines(text)
	for i, l := range lines {
		lines[i] = routeTimers.ReplaceAllString(l, "")
	}
	return lines
}

var filterCounters = regexp.MustCompile(`packets \d+ bytes \d+|\[\d+:\d+\]|expires \S+`)

// filterLines masks rule counters and comments that carry a timestamp.
func filterLines(text string) []string {
	var lines []string
	for _, l := range plainLines(text) {
		if strings.HasPrefix(l, "#") {
			continue // iptables-save's "# Generated by … on <date>"
		}
		lines = append(lines, filterCounters.ReplaceAllString(l, "<counter>"))
	}
	return lines
}
