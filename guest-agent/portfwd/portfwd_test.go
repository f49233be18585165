package portfwd

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/containerd/errdefs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipeDialer answers every dial with one end of a net.Pipe and keeps the
// other; refuse lists the networks it refuses.
type pipeDialer struct {
	refuse map[string]bool
	dialed []string
	peers  []net.Conn
}

func (p *pipeDialer) dial(_ context.Context, network, addr string) (net.Conn, error) {
	p.dialed = append(p.dialed, network+" "+addr)
	if p.refuse[network] {
		return nil, errors.New("connection refused")
	}
	a, b := net.Pipe()
	p.peers = append(p.peers, b)
	return a, nil
}

func (p *pipeDialer) close() {
	for _, c := range p.peers {
		_ = c.Close()
	}
}

func TestDialFallsBackToIPv6(t *testing.T) {
	p := &pipeDialer{refuse: map[string]bool{"tcp4": true}}
	defer p.close()
	tb := New(p.dial)
	defer tb.CloseAll(true)
	if _, err := tb.Dial(context.Background(), 8080); err != nil {
		t.Fatal(err)
	}
	if len(p.dialed) != 2 || p.dialed[0] != "tcp4 127.0.0.1:8080" || p.dialed[1] != "tcp6 [::1]:8080" {
		t.Fatalf("dialed %q, want 127.0.0.1 then [::1]", p.dialed)
	}
	p.refuse["tcp6"] = true
	if _, err := tb.Dial(context.Background(), 8080); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("Dial with nothing listening: %v, want unavailable", err)
	}
}

// TestHostileRequests: what a host may send that the table must refuse.
func TestHostileRequests(t *testing.T) {
	p := &pipeDialer{}
	defer p.close()
	tb := New(p.dial)
	defer tb.CloseAll(true)
	ctx := context.Background()
	for _, port := range []uint32{0, 65536, 1 << 31} {
		if _, err := tb.Dial(ctx, port); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Dial(%d) = %v, want invalid argument", port, err)
		}
	}
	if len(p.dialed) != 0 {
		t.Fatalf("refused ports were dialed: %q", p.dialed)
	}
	if _, err := tb.Read(ctx, 1, 10); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Read of a stream never opened: %v", err)
	}
	if _, err := tb.Write(1, make([]byte, MaxChunk+1)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Write of MaxChunk+1 bytes: %v", err)
	}
	for range MaxStreams {
		if _, err := tb.Dial(ctx, 80); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tb.Dial(ctx, 80); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("Dial beyond %d streams: %v", MaxStreams, err)
	}
	if err := tb.Close(1); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second Close: %v", err)
	}
	id, err := tb.Dial(ctx, 80)
	if err != nil || id != MaxStreams+1 {
		t.Fatalf("Dial after a Close = %d, %v: want a new ID %d (IDs are never reused)", id, err, MaxStreams+1)
	}
}

func TestCloseAllEndsReadsAndRefusesDials(t *testing.T) {
	p := &pipeDialer{}
	defer p.close()
	tb := New(p.dial)
	ctx := context.Background()
	id, err := tb.Dial(ctx, 80)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tb.Read(ctx, id, 0)
		done <- err
	}()
	tb.CloseAll(true)
	if err := <-done; err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Read blocked at CloseAll returned %v, want an error other than EOF", err)
	}
	if tb.Len() != 0 {
		t.Fatalf("%d streams after CloseAll", tb.Len())
	}
	if _, err := tb.Dial(ctx, 80); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Dial after the final CloseAll: %v", err)
	}
}

func TestReadCancelledKeepsData(t *testing.T) {
	p := &pipeDialer{}
	defer p.close()
	tb := New(p.dial)
	defer tb.CloseAll(true)
	id, err := tb.Dial(context.Background(), 80)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tb.Read(ctx, id, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Read: %v", err)
	}
	go func() { _, _ = p.peers[0].Write([]byte("hello")) }()
	b, err := tb.Read(context.Background(), id, 3)
	if err != nil || string(b) != "hel" {
		t.Fatalf("Read after a cancelled one = %q, %v, want hel", b, err)
	}
}

func TestChunkLen(t *testing.T) {
	for _, c := range []struct {
		n    uint32
		want int
	}{{0, DefaultChunk}, {1, 1}, {MaxChunk, MaxChunk}, {MaxChunk + 1, MaxChunk}, {1<<32 - 1, MaxChunk}} {
		if got := ChunkLen(c.n); got != c.want {
			t.Errorf("ChunkLen(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}
