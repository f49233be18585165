package portfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/vishvananda/netns"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// chunk is how much one WritePort or ReadPort moves.
const chunk = 32 << 10

// dialTimeout bounds the agent's DialPort.
const dialTimeout = 10 * time.Second

// Forwarder is the port forwarding of one pod: the listener and NAT rule in
// its network namespace and the connections being relayed.
type Forwarder struct {
	agent api.PortForwardService
	log   *slog.Logger
	ns    netns.NsHandle
	l     *net.TCPListener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{}
	closed bool
}

// Start sets up port forwarding in the network namespace at netnsPath: a
// listener on 127.0.0.1 and the redirect of loopback TCP to it. Each
// connection is relayed to the guest through agent. Close undoes it all.
func Start(netnsPath string, agent api.PortForwardService, log *slog.Logger) (*Forwarder, error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", netnsPath, err)
	}
	l, err := listenIn(ns)
	if err != nil {
		_ = ns.Close()
		return nil, fmt.Errorf("port forwarding in %s: %w", netnsPath, err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port) //nolint:gosec // G115: a TCP port
	if err := addRedirect(int(ns), port); err != nil {
		_ = l.Close()
		_ = ns.Close()
		return nil, fmt.Errorf("port forwarding in %s: %w", netnsPath, err)
	}
	f := &Forwarder{agent: agent, log: log, ns: ns, l: l, conns: map[*net.TCPConn]struct{}{}}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

// listenIn opens a TCP listener on 127.0.0.1 (any free port) in ns, from a
// thread that never runs anything else (it ends with its goroutine).
func listenIn(ns netns.NsHandle) (*net.TCPListener, error) {
	type result struct {
		l   *net.TCPListener
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := netns.Set(ns); err != nil {
			rc <- result{err: fmt.Errorf("entering the namespace: %w", err)}
			return
		}
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			err = fmt.Errorf("listening on 127.0.0.1: %w", err)
		}
		rc <- result{l, err}
	}()
	r := <-rc
	return r.l, r.err
}

// Port is the listener's port in the pod's namespace.
func (f *Forwarder) Port() int { return f.l.Addr().(*net.TCPAddr).Port }

// Close stops accepting, ends every relayed connection, removes the NAT
// rule and waits for the relays to end.
func (f *Forwarder) Close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.cancel()
	err := f.l.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	f.wg.Wait()
	if derr := delRedirect(int(f.ns)); derr != nil {
		err = errors.Join(err, derr)
	}
	return errors.Join(err, f.ns.Close())
}

func (f *Forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.l.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				f.log.Warn("port forwarding: accepting a connection", "err", err)
			}
			return
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = c.Close()
			return
		}
		f.conns[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		go f.relay(c)
	}
}

// relay carries one connection to the guest and back.
func (f *Forwarder) relay(c *net.TCPConn) {
	defer f.wg.Done()
	defer func() {
		f.mu.Lock()
		delete(f.conns, c)
		f.mu.Unlock()
		_ = c.Close()
	}()
	port, err := originalPort(c)
	if err == nil && port == 0 {
		err = errors.New("original destination port 0")
	}
	if err != nil {
		f.log.Warn("port forwarding: not a redirected connection", "err", err)
		_ = c.SetLinger(0)
		return
	}
	dctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	r, err := f.agent.DialPort(dctx, &api.DialPortRequest{Port: uint32(port)})
	cancel()
	if err != nil {
		// A reset tells the client at once, as "connection refused" would.
		f.log.Warn("port forwarding: connecting in the guest", "port", port, "err", errgrpc.ToNative(err))
		_ = c.SetLinger(0)
		return
	}
	id := r.GetStreamId()
	f.log.Debug("port forwarding: connection opened", "port", port, "stream", id)

	// Each direction ends with nil on a clean EOF (passed on as a
	// half-close) or an error, which ends both.
	errc := make(chan error, 2)
	go func() { errc <- f.toGuest(c, id) }()
	go func() { errc <- f.fromGuest(c, id) }()
	err = <-errc
	if err != nil {
		// An error ends both directions: the client gets a reset, and
		// closing the guest's stream ends a ReadPort waiting there.
		_ = c.SetLinger(0)
		_ = c.Close()
		err = errors.Join(err, f.closePort(id))
		// The other direction ends on the closed socket or stream; its
		// error only repeats that.
		if other := <-errc; other != nil {
			f.log.Debug("port forwarding: other direction ended", "port", port, "stream", id, "err", other)
		}
	} else {
		// A clean end of one direction: the other goes on until its own.
		err = errors.Join(<-errc, f.closePort(id))
	}
	if err != nil && f.ctx.Err() == nil {
		f.log.Debug("port forwarding: connection ended", "port", port, "stream", id, "err", err)
		return
	}
	f.log.Debug("port forwarding: connection closed", "port", port, "stream", id)
}

// closePort closes the guest's end of stream id.
func (f *Forwarder) closePort(id uint64) error {
	ctx, cancel := context.WithTimeout(f.ctx, dialTimeout)
	defer cancel()
	if _, err := f.agent.ClosePort(ctx, &api.ClosePortRequest{StreamId: id}); err != nil && f.ctx.Err() == nil {
		return fmt.Errorf("closing stream %d in the guest: %w", id, errgrpc.ToNative(err))
	}
	return nil
}

// toGuest copies what the client sends to the guest, then half-closes.
func (f *Forwarder) toGuest(c *net.TCPConn, id uint64) error {
	buf := make([]byte, chunk)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := f.agent.WritePort(f.ctx, &api.WritePortRequest{StreamId: id, Data: buf[:n]}); werr != nil {
				return fmt.Errorf("writing to the guest: %w", errgrpc.ToNative(werr))
			}
		}
		if errors.Is(err, io.EOF) {
			if _, cerr := f.agent.CloseWritePort(f.ctx, &api.ClosePortRequest{StreamId: id}); cerr != nil {
				return fmt.Errorf("half-closing in the guest: %w", errgrpc.ToNative(cerr))
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading from the client: %w", err)
		}
	}
}

// fromGuest copies what the guest sends to the client, then half-closes.
func (f *Forwarder) fromGuest(c *net.TCPConn, id uint64) error {
	for {
		r, err := f.agent.ReadPort(f.ctx, &api.ReadPortRequest{StreamId: id, Len: chunk})
		if err != nil {
			return fmt.Errorf("reading from the guest: %w", errgrpc.ToNative(err))
		}
		if len(r.GetData()) == 0 {
			if err := c.CloseWrite(); err != nil {
				return fmt.Errorf("half-closing to the client: %w", err)
			}
			return nil
		}
		if _, err := c.Write(r.GetData()); err != nil {
			return fmt.Errorf("writing to the client: %w", err)
		}
	}
}
