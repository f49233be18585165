// Package portfwd holds the guest's end of port forwarding: TCP connections
// the agent opens to the guest's loopback on the host's behalf (the
// PortForward service), each one a numbered stream the host reads, writes
// and closes. The pod's containers share the guest's network namespace, so
// a port a container listens on, 127.0.0.1 included, is a port here.
//
// Every request is the host's, an adversary in a confidential pod (where
// the policy's allow_port_forward decides first): ports outside 1..65535
// are refused, stream IDs are the agent's own (never reused), at most
// MaxStreams are open at once, and a read or write moves at most MaxChunk
// bytes. CloseAll ends every stream (DestroySandbox, Shutdown).
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

const (
	// MaxStreams is how many connections may be open at once.
	MaxStreams = 128
	// MaxChunk is the most one read or write moves (ttrpc messages are
	// limited to 4 MiB).
	MaxChunk = 1 << 20
	// DefaultChunk is what a read of length 0 gets.
	DefaultChunk = 32 << 10
	// dialTimeout bounds one connection attempt on the loopback.
	dialTimeout = 5 * time.Second
)

// Dialer connects to a loopback address ("127.0.0.1:8080"); tests replace it.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Table is the agent's open streams.
type Table struct {
	dial Dialer

	mu      sync.Mutex
	next    uint64
	streams map[uint64]*stream
	closed  bool
}

// stream is one connection; reads are serialised so a stream's data stays in
// order even when the host sends two reads at once.
type stream struct {
	conn   net.Conn
	readMu sync.Mutex
}

// New returns an empty Table that dials with dial (nil: net.Dialer).
func New(dial Dialer) *Table {
	if dial == nil {
		d := &net.Dialer{Timeout: dialTimeout}
		dial = d.DialContext
	}
	return &Table{dial: dial, streams: map[uint64]*stream{}}
}

// ChunkLen is how many bytes a read of n may return.
func ChunkLen(n uint32) int {
	switch {
	case n == 0:
		return DefaultChunk
	case n > MaxChunk:
		return MaxChunk
	}
	return int(n)
}

// Dial connects to 127.0.0.1:port, else [::1]:port (what containerd's own
// port forwarding tries, in that order), and returns the new stream's ID.
func (t *Table) Dial(ctx context.Context, port uint32) (uint64, error) {
	if port == 0 || port > 65535 {
		return 0, fmt.Errorf("port %d: expected 1 to 65535: %w", port, errdefs.ErrInvalidArgument)
	}
	t.mu.Lock()
	full := len(t.streams) >= MaxStreams
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("port forwarding to port %d: the sandbox is being destroyed: %w", port, errdefs.ErrFailedPrecondition)
	}
	if full {
		return 0, fmt.Errorf("port forwarding to port %d: %d connections are open, the most a pod may have: %w", port, MaxStreams, errdefs.ErrResourceExhausted)
	}
	p := strconv.FormatUint(uint64(port), 10)
	conn, err4 := t.dial(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err4 != nil {
		var err6 error
		conn, err6 = t.dial(ctx, "tcp6", net.JoinHostPort("::1", p))
		if err6 != nil {
			return 0, fmt.Errorf("connecting to port %d in the guest (IPv4: %w; IPv6: %w): %w", port, err4, err6, errdefs.ErrUnavailable)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.streams) >= MaxStreams {
		_ = conn.Close()
		return 0, fmt.Errorf("port forwarding to port %d: the sandbox is being destroyed or %d connections are open: %w", port, MaxStreams, errdefs.ErrResourceExhausted)
	}
	t.next++
	t.streams[t.next] = &stream{conn: conn}
	return t.next, nil
}

func (t *Table) get(id uint64) (*stream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.streams[id]
	if !ok {
		return nil, fmt.Errorf("port-forward stream %d: %w", id, errdefs.ErrNotFound)
	}
	return s, nil
}

// Read returns up to ChunkLen(n) bytes of stream id, blocking until there
// are some; io.EOF once the peer closed its side. Cancelling ctx ends the
// wait (the data stays for the next read).
func (t *Table) Read(ctx context.Context, id uint64, n uint32) ([]byte, error) {
	s, err := t.get(id)
	if err != nil {
		return nil, err
	}
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if err := s.conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("reading port-forward stream %d: %w", id, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, ChunkLen(n))
	m, err := s.conn.Read(buf)
	for m == 0 && err == nil {
		m, err = s.conn.Read(buf)
	}
	if m > 0 {
		return buf[:m], nil
	}
	switch {
	case errors.Is(err, io.EOF):
		return nil, io.EOF
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, net.ErrClosed):
		return nil, fmt.Errorf("port-forward stream %d: closed: %w", id, errdefs.ErrNotFound)
	}
	return nil, fmt.Errorf("reading port-forward stream %d: %w", id, err)
}

// Write writes all of data to stream id.
func (t *Table) Write(id uint64, data []byte) (int, error) {
	if len(data) > MaxChunk {
		return 0, fmt.Errorf("port-forward write of %d bytes: at most %d: %w", len(data), MaxChunk, errdefs.ErrInvalidArgument)
	}
	s, err := t.get(id)
	if err != nil {
		return 0, err
	}
	n, err := s.conn.Write(data)
	if err != nil {
		return n, fmt.Errorf("writing port-forward stream %d: %w", id, err)
	}
	return n, nil
}

// CloseWrite closes stream id's sending side: the guest's peer reads EOF.
func (t *Table) CloseWrite(id uint64) error {
	s, err := t.get(id)
	if err != nil {
		return err
	}
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("port-forward stream %d cannot half-close: %w", id, errdefs.ErrNotImplemented)
	}
	if err := cw.CloseWrite(); err != nil {
		return fmt.Errorf("half-closing port-forward stream %d: %w", id, err)
	}
	return nil
}

// Close closes stream id and forgets it.
func (t *Table) Close(id uint64) error {
	t.mu.Lock()
	s, ok := t.streams[id]
	delete(t.streams, id)
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("port-forward stream %d: %w", id, errdefs.ErrNotFound)
	}
	return s.conn.Close()
}

// Len is how many streams are open.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.streams)
}

// CloseAll closes every stream; with final set, later dials are refused
// (the agent is shutting down). Reads blocked on a stream return.
func (t *Table) CloseAll(final bool) {
	t.mu.Lock()
	streams := t.streams
	t.streams = map[uint64]*stream{}
	if final {
		t.closed = true
	}
	t.mu.Unlock()
	for _, s := range streams {
		_ = s.conn.Close()
	}
}
