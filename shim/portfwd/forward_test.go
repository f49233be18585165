package portfwd

import (
	"github.com/veil-runtime/veil/internal/netnstest"

	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	guest "github.com/veil-runtime/veil/guest-agent/portfwd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guestAgent is the agent's PortForward service over the agent's own
// stream table, whose "guest loopback" is the test's: what it dials is the
// host's 127.0.0.1. It records the ports it was asked for.
type guestAgent struct {
	api.PortForwardService
	t *guest.Table

	mu     sync.Mutex
	ports  []uint32
	closed int
}

func (g *guestAgent) DialPort(ctx context.Context, r *api.DialPortRequest) (*api.DialPortResponse, error) {
	g.mu.Lock()
	g.ports = append(g.ports, r.GetPort())
	g.mu.Unlock()
	id, err := g.t.Dial(ctx, r.GetPort())
	if err != nil {
		return nil, err
	}
	return &api.DialPortResponse{StreamId: id}, nil
}

func (g *guestAgent) ReadPort(ctx context.Context, r *api.ReadPortRequest) (*api.ReadPortResponse, error) {
	b, err := g.t.Read(ctx, r.GetStreamId(), r.GetLen())
	if errors.Is(err, io.EOF) {
		return &api.ReadPortResponse{}, nil
	}
	return &api.ReadPortResponse{Data: b}, err
}

func (g *guestAgent) WritePort(ctx context.Context, r *api.WritePortRequest) (*api.WritePortResponse, error) {
	n, err := g.t.Write(r.GetStreamId(), r.GetData())
	return &api.WritePortResponse{Len: uint32(n)}, err //nolint:gosec // G115: bounded by MaxChunk
}

func (g *guestAgent) CloseWritePort(ctx context.Context, r *api.ClosePortRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, g.t.CloseWrite(r.GetStreamId())
}

func (g *guestAgent) ClosePort(ctx context.Context, r *api.ClosePortRequest) (*emptypb.Empty, error) {
	g.mu.Lock()
	g.closed++
	g.mu.Unlock()
	return &emptypb.Empty{}, g.t.Close(r.GetStreamId())
}

// podNetNS is a new network namespace with loopback up, as the CNI
// loopback plugin leaves a pod's, pinned in the test's directory.
func podNetNS(t *testing.T) string {
	t.Helper()
	return netnstest.New(t, "pod", true)
}

// dialIn connects to 127.0.0.1:port in the namespace at path, as
// containerd's port forwarding does.
func dialIn(t *testing.T, path string, port int) (*net.TCPConn, error) {
	t.Helper()
	type result struct {
		c   *net.TCPConn
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked
		ns, err := netns.GetFromPath(path)
		if err != nil {
			rc <- result{err: err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			rc <- result{err: err}
			return
		}
		c, err := net.DialTCP("tcp4", nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		rc <- result{c, err}
	}()
	r := <-rc
	return r.c, r.err
}

// echoServer listens on the test's own loopback (the "guest's") and
// answers each connection with "echo:" and all it read, once the client
// half-closes.
func echoServer(t *testing.T) (port int) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func start(t *testing.T) (path string, g *guestAgent, f *Forwarder) {
	t.Helper()
	path = podNetNS(t)
	g = &guestAgent{t: guest.New(nil)}
	t.Cleanup(func() { g.t.CloseAll(true) })
	f, err := Start(path, g, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return path, g, f
}

// TestForwardsLoopbackToTheGuest: a connection to 127.0.0.1:PORT in the
// pod's namespace, where nothing of the pod listens, reaches PORT in the
// guest; data goes both ways with half-closes, and the guest's stream is
// closed after.
func TestForwardsLoopbackToTheGuest(t *testing.T) {
	path, g, f := start(t)
	if got := netnstest.NFTables(t, path); len(got) != 1 || got[0] != TableName {
		t.Fatalf("tables in the pod namespace: %q, want [%s]", got, TableName)
	}
	port := echoServer(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 kB: several chunks each way
	c, err := dialIn(t, path, port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		_, _ = c.Write(big)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append([]byte("echo:"), big...)) {
		t.Fatalf("read %d bytes back, want %d (echo:+sent)", len(got), len(big)+5)
	}
	g.mu.Lock()
	ports := g.ports
	g.mu.Unlock()
	if len(ports) != 1 || ports[0] != uint32(port) { //nolint:gosec // G115: a TCP port
		t.Fatalf("the guest was asked for ports %v, want [%d]", ports, port)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if g.t.Len() != 0 {
		t.Fatalf("%d guest streams open after the connection and Close", g.t.Len())
	}
	if got := netnstest.NFTables(t, path); len(got) != 0 {
		t.Fatalf("tables left in the pod namespace after Close: %q", got)
	}
	if _, err := dialIn(t, path, port); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Close: %v, want connection refused (nothing listens, no redirect)", err)
	}
}

// TestNothingListeningInTheGuestResets: the listener always accepts, so a
// port nothing listens on in the guest is a reset, at once.
func TestNothingListeningInTheGuestResets(t *testing.T) {
	path, _, _ := start(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close() // a free port: nothing listens
	c, err := dialIn(t, path, port)
	if err == nil {
		defer c.Close()
		_, err = c.Read(make([]byte, 1))
	}
	// The reset can come before connect(2) has reported success.
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from a forward to port %d with no listener: %v, want connection reset", port, err)
	}
}

// TestCloseEndsOpenConnections: a connection still open at teardown is
// ended and its guest stream closed; Close waits for its relay (goleak
// checks nothing is left).
func TestCloseEndsOpenConnections(t *testing.T) {
	path, g, f := start(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := dialIn(t, path, l.Addr().(*net.TCPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gc, ok := <-accepted
	if !ok {
		t.Fatal("the guest side never saw the connection")
	}
	defer gc.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client's connection still reads after Close")
	}
	g.t.CloseAll(true) // the agent does this on DestroySandbox
	if _, err := gc.Read(make([]byte, 1)); err == nil {
		t.Fatal("the guest's connection still open after DestroySandbox")
	}
}

// TestStartReplacesAStaleTable: a table left by a shim that died is
// replaced, not doubled.
func TestStartReplacesAStaleTable(t *testing.T) {
	path := podNetNS(t)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := addRedirect(int(ns), 1); err != nil {
		t.Fatal(err)
	}
	g := &guestAgent{t: guest.New(nil)}
	defer g.t.CloseAll(true)
	f, err := Start(path, g, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	port := echoServer(t)
	c, err := dialIn(t, path, port)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("x"))
	_ = c.CloseWrite()
	got, _ := io.ReadAll(c)
	_ = c.Close()
	if string(got) != "echo:x" {
		t.Fatalf("read %q through the new table, want echo:x", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := netnstest.NFTables(t, path); len(got) != 0 {
		t.Fatalf("tables left: %q", got)
	}
}
