package nftables

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchSocket sends nf_tables batches on a netlink socket of our own. google/nftables still
// encodes the messages (we capture them through its test-dial hook), but its Flush asks for
// one acknowledgement per message and reads them one receive call at a time, and its errors
// do not say which message failed. Here only the last message asks for an acknowledgement:
// the kernel reports every failing message anyway, and processes the whole batch inside our
// sendmsg, so when it returns every answer is already queued on the socket.
type batchSocket struct {
	fd  int
	seq uint32
}

// batchRecvBuffer holds the answers of one batch: an acknowledgement and the errors, each
// only a header long thanks to NETLINK_CAP_ACK, plus the kernel's text.
const batchRecvBuffer = 4 << 20

// newBatchSocket opens the socket in the calling thread's network namespace.
func newBatchSocket() (*batchSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("opening a netfilter netlink socket: %w", err)
	}
	opts := []struct{ level, opt, val int }{
		// *FORCE ignores net.core.{w,r}mem_max: we run as root in the node's namespace,
		// and a full sync of 10k Services is a batch of about 10 MB.
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchBuffer},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, batchRecvBuffer},
		// Errors carry the kernel's message and the failing attribute's offset...
		{unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1},
		// ...but not a copy of the failing message.
		{unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("setting netlink socket option %d: %w", o.opt, err)
		}
	}
	tv := unix.NsecToTimeval(int64(30 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding the netlink socket: %w", err)
	}
	return &batchSocket{fd: fd}, nil
}

func (b *batchSocket) Close() error { return unix.Close(b.fd) }

// captureConn returns a google/nftables connection that records the batch it would send
// instead of sending it; *into receives the messages between the batch markers.
func captureConn(into *[]netlink.Message) (*nftables.Conn, error) {
	return nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) > 2 {
			*into = append(*into, req[1:len(req)-1]...)
		}
		// No replies: the library's acknowledgement reads see nothing and accept that.
		return nil, nil
	}))
}

// batchError is a batch the kernel refused, naming the messages that failed.
type batchError struct {
	total    int
	failures []string
	// indexes are the failing messages' positions in the batch.
	indexes []int
	errno   syscall.Errno
}

func (e *batchError) Error() string {
	shown := e.failures
	more := ""
	if len(shown) > 3 {
		more = fmt.Sprintf(" (and %d more)", len(shown)-3)
		shown = shown[:3]
	}
	return fmt.Sprintf("kernel refused a batch of %d messages: %s%s", e.total, strings.Join(shown, "; "), more)
}

func (e *batchError) Unwrap() error { return e.errno }

// send writes msgs as one batch and waits for the kernel's verdict.
func (b *batchSocket) send(msgs []netlink.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	first := b.seq + 1
	var buf []byte
	appendMsg := func(typ uint16, flags netlink.HeaderFlags, data []byte) {
		b.seq++
		m := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: flags, Sequence: b.seq}, Data: data}
		m.Header.Length = uint32(unix.NLMSG_HDRLEN + len(data))
		raw, _ := m.MarshalBinary()
		buf = append(buf, raw...)
	}
	batchHeader := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	appendMsg(unix.NFNL_MSG_BATCH_BEGIN, netlink.Request, batchHeader)
	for i, m := range msgs {
		flags := m.Header.Flags &^ netlink.Acknowledge
		if i == len(msgs)-1 {
			flags |= netlink.Acknowledge
		}
		appendMsg(uint16(m.Header.Type), flags, m.Data)
	}
	last := b.seq
	appendMsg(unix.NFNL_MSG_BATCH_END, netlink.Request, batchHeader)

	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending a batch of %d messages (%d bytes): %w", len(msgs), len(buf), err)
	}
	describe := func(seq uint32) string {
		switch {
		case seq == first:
			return "the batch"
		case seq > first && seq <= last:
			return describeMessage(seq-first, msgs[seq-first-1])
		}
		return fmt.Sprintf("sequence %d", seq)
	}
	bErr := &batchError{total: len(msgs)}
	rbuf := make([]byte, 1<<16)
	done := false
	for !done {
		n, _, err := unix.Recvfrom(b.fd, rbuf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("waiting for the kernel's answer to a batch of %d messages: %w", len(msgs), err)
		}
		replies, err := syscall.ParseNetlinkMessage(rbuf[:n])
		if err != nil {
			return fmt.Errorf("parsing the kernel's answer: %w", err)
		}
		for _, r := range replies {
			if r.Header.Type != unix.NLMSG_ERROR || len(r.Data) < 4 {
				continue
			}
			errno := -int32(binary.NativeEndian.Uint32(r.Data[:4]))
			if errno != 0 {
				bErr.errno = syscall.Errno(errno)
				text := fmt.Sprintf("%s: %v", describe(r.Header.Seq), syscall.Errno(errno))
				if msg := extAckMessage(r); msg != "" {
					text += " (" + msg + ")"
				}
				bErr.failures = append(bErr.failures, text)
				if r.Header.Seq > first && r.Header.Seq <= last {
					bErr.indexes = append(bErr.indexes, int(r.Header.Seq-first-1))
				}
			}
			// The last message's answer comes after every error of the messages before
			// it; an error about the batch itself ends it too (commit failure, no memory).
			if r.Header.Seq == last || (r.Header.Seq == first && errno != 0) {
				done = true
			}
		}
	}
	// Anything still queued belongs to this batch (a commit failure reported after the
	// last message's answer): drain it so the next batch starts clean.
	for {
		n, _, err := unix.Recvfrom(b.fd, rbuf, unix.MSG_DONTWAIT)
		if err != nil || n == 0 {
			break
		}
		replies, _ := syscall.ParseNetlinkMessage(rbuf[:n])
		for _, r := range replies {
			if r.Header.Type == unix.NLMSG_ERROR && len(r.Data) >= 4 {
				if errno := -int32(binary.NativeEndian.Uint32(r.Data[:4])); errno != 0 {
					bErr.errno = syscall.Errno(errno)
					bErr.failures = append(bErr.failures, fmt.Sprintf("%s: %v", describe(r.Header.Seq), syscall.Errno(errno)))
				}
			}
		}
	}
	if len(bErr.failures) > 0 {
		return bErr
	}
	return nil
}

// extAckMessage returns the kernel's text in an error answer (NLMSGERR_ATTR_MSG).
func extAckMessage(r syscall.NetlinkMessage) string {
	if r.Header.Flags&unix.NLM_F_ACK_TLVS == 0 || len(r.Data) < 4+unix.NLMSG_HDRLEN {
		return ""
	}
	attrs, err := netlink.UnmarshalAttributes(r.Data[4+unix.NLMSG_HDRLEN:])
	if err != nil {
		return ""
	}
	for _, a := range attrs {
		if a.Type == unix.NLMSGERR_ATTR_MSG {
			return strings.TrimRight(string(a.Data), "\x00")
		}
	}
	return ""
}

// describeMessage names an nf_tables message by its kind and the objects it names, e.g.
// "message 12 (NEWRULE svcplane/svc-n10)".
func describeMessage(index uint32, m netlink.Message) string {
	kinds := map[int]string{
		unix.NFT_MSG_NEWTABLE: "NEWTABLE", unix.NFT_MSG_DELTABLE: "DELTABLE", unix.NFT_MSG_NEWCHAIN: "NEWCHAIN",
		unix.NFT_MSG_DELCHAIN: "DELCHAIN", unix.NFT_MSG_NEWRULE: "NEWRULE", unix.NFT_MSG_DELRULE: "DELRULE",
		unix.NFT_MSG_NEWSET: "NEWSET", unix.NFT_MSG_DELSET: "DELSET", unix.NFT_MSG_NEWSETELEM: "NEWSETELEM",
		unix.NFT_MSG_DELSETELEM: "DELSETELEM",
	}
	kind := kinds[int(m.Header.Type)&0xff]
	if kind == "" {
		kind = fmt.Sprintf("type %#x", int(m.Header.Type))
	}
	var names []string
	if len(m.Data) > 4 {
		if attrs, err := netlink.UnmarshalAttributes(m.Data[4:]); err == nil {
			// Attributes 1-3 are the table and object names in every message kind we send.
			for _, a := range attrs {
				if a.Type >= 1 && a.Type <= 3 && len(a.Data) > 1 && a.Data[len(a.Data)-1] == 0 && printable(a.Data[:len(a.Data)-1]) {
					names = append(names, string(a.Data[:len(a.Data)-1]))
				}
			}
		}
	}
	return fmt.Sprintf("message %d (%s %s)", index, kind, strings.Join(names, "/"))
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// elemList encodes the elements of one set into NEWSETELEM (or DELSETELEM) messages, each
// element written straight into the message (the library builds a few small attribute
// slices per element, which at 100k elements was most of a full sync's time). A message's
// element list is one nested attribute with a 16-bit length, so lists are split below it:
// the library does not split, and silently wraps the length, after which the kernel reads
// element bytes as attributes (the ENOENT of 2,000-Service batches).
type elemList struct {
	family byte
	table  string
	set    string
	del    bool
	buf    []byte // the current message's element list, without its attribute header
	msgs   []netlink.Message
}

// maxElemBytes bounds one message's element list (the attribute length is 16 bits).
const maxElemBytes = 60 << 10

// attr appends a netlink attribute header for a payload of n bytes.
func attr(b []byte, typ uint16, n int) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.NLA_HDRLEN+n))
	return binary.NativeEndian.AppendUint16(b, typ)
}

func pad(b []byte) []byte {
	for len(b)%unix.NLA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func alignedLen(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// add appends one element: key, and either a data value or a verdict (code, chain).
func (l *elemList) add(key, val []byte, verdict *expr.Verdict) {
	keyAttr := unix.NLA_HDRLEN + unix.NLA_HDRLEN + alignedLen(len(key))
	dataAttr := 0
	switch {
	case verdict != nil:
		inner := unix.NLA_HDRLEN + 4
		if verdict.Chain != "" {
			inner += unix.NLA_HDRLEN + alignedLen(len(verdict.Chain)+1)
		}
		dataAttr = unix.NLA_HDRLEN + unix.NLA_HDRLEN + inner
	case len(val) > 0:
		dataAttr = unix.NLA_HDRLEN + unix.NLA_HDRLEN + alignedLen(len(val))
	}
	elem := unix.NLA_HDRLEN + keyAttr + dataAttr
	if len(l.buf)+elem > maxElemBytes {
		l.flush()
	}
	b := attr(l.buf, unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, keyAttr+dataAttr)
	b = attr(b, unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, keyAttr-unix.NLA_HDRLEN)
	b = attr(b, unix.NFTA_DATA_VALUE, len(key))
	b = pad(append(b, key...))
	switch {
	case verdict != nil:
		b = attr(b, unix.NFTA_SET_ELEM_DATA|unix.NLA_F_NESTED, dataAttr-unix.NLA_HDRLEN)
		b = attr(b, unix.NFTA_DATA_VERDICT|unix.NLA_F_NESTED, dataAttr-2*unix.NLA_HDRLEN)
		b = attr(b, unix.NFTA_VERDICT_CODE, 4)
		b = binary.BigEndian.AppendUint32(b, uint32(int32(verdict.Kind)))
		if verdict.Chain != "" {
			b = attr(b, unix.NFTA_VERDICT_CHAIN, len(verdict.Chain)+1)
			b = pad(append(append(b, verdict.Chain...), 0))
		}
	case len(val) > 0:
		b = attr(b, unix.NFTA_SET_ELEM_DATA|unix.NLA_F_NESTED, dataAttr-unix.NLA_HDRLEN)
		b = attr(b, unix.NFTA_DATA_VALUE, len(val))
		b = pad(append(b, val...))
	}
	l.buf = b
}

// flush closes the current message.
func (l *elemList) flush() {
	if len(l.buf) == 0 {
		return
	}
	data := []byte{l.family, unix.NFNETLINK_V0, 0, 0}
	data = attr(data, unix.NFTA_SET_ELEM_LIST_TABLE, len(l.table)+1)
	data = pad(append(append(data, l.table...), 0))
	data = attr(data, unix.NFTA_SET_ELEM_LIST_SET, len(l.set)+1)
	data = pad(append(append(data, l.set...), 0))
	data = attr(data, unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, len(l.buf))
	data = append(data, l.buf...)
	typ := unix.NFT_MSG_NEWSETELEM
	flags := netlink.Request | netlink.Create
	if l.del {
		typ = unix.NFT_MSG_DELSETELEM
		flags = netlink.Request
	}
	l.msgs = append(l.msgs, netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: flags},
		Data:   data,
	})
	l.buf = make([]byte, 0, maxElemBytes+256)
}

// messages closes the list and returns its messages.
func (l *elemList) messages() []netlink.Message {
	l.flush()
	return l.msgs
}
