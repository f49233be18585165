package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func readAll(t *testing.T, b *Buffer, chunk int) []byte {
	t.Helper()
	var out []byte
	for {
		p, err := b.Read(context.Background(), chunk)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		out = append(out, p...)
	}
}

func TestBufferKeepsOrderThenEOF(t *testing.T) {
	b := NewBuffer(16)
	want := bytes.Repeat([]byte("0123456789abcdef"), 100)
	go func() {
		// Odd-sized writes larger than the limit exercise the blocking path.
		for i := 0; i < len(want); i += 37 {
			end := min(i+37, len(want))
			if _, err := b.Write(want[i:end]); err != nil {
				t.Errorf("Write: %v", err)
			}
		}
		b.CloseWrite()
	}()
	got := readAll(t, b, 5)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d in order", len(got), len(want))
	}
}

func TestBufferBackpressure(t *testing.T) {
	b := NewBuffer(8)
	wrote := make(chan int)
	go func() {
		n, _ := b.Write([]byte("0123456789ab"))
		wrote <- n
	}()
	// The writer must not finish while only 8 of its 12 bytes fit.
	first, err := b.Read(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) > 8 {
		t.Fatalf("buffer held %d bytes, limit 8", len(first))
	}
	var rest []byte
	for len(first)+len(rest) < 12 {
		p, err := b.Read(context.Background(), 100)
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, p...)
	}
	if n := <-wrote; n != 12 {
		t.Fatalf("Write returned %d, want 12", n)
	}
	if got := string(first) + string(rest); got != "0123456789ab" {
		t.Fatalf("got %q", got)
	}
	if b.Len() != 0 {
		t.Fatalf("Len = %d after draining", b.Len())
	}
}

func TestBufferReadHonoursContext(t *testing.T) {
	b := NewBuffer(4)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Read(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read on empty buffer with cancelled ctx = %v, want context.Canceled", err)
	}
}

func TestBufferDiscardUnblocksWriterAndReader(t *testing.T) {
	b := NewBuffer(2)
	_, _ = b.Write([]byte("xy"))
	errc := make(chan error)
	go func() {
		_, err := b.Write([]byte("z"))
		errc <- err
	}()
	b.Discard()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Write after Discard = %v, want ErrClosed", err)
	}
	if _, err := b.Read(context.Background(), 1); !errors.Is(err, io.EOF) {
		t.Fatalf("Read after Discard = %v, want EOF", err)
	}
}

type eioReader struct{ r io.Reader }

func (e eioReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, errors.New("read /dev/ptmx: input/output error")
	}
	return n, err
}

func TestFillEndsStreamOnReadError(t *testing.T) {
	b := NewBuffer(1 << 10)
	Fill(b, eioReader{strings.NewReader("hello")})
	if got := string(readAll(t, b, 3)); got != "hello" {
		t.Fatalf("got %q, want hello", got)
	}
}

func TestFillDrainsAfterDiscard(t *testing.T) {
	b := NewBuffer(1)
	b.Discard()
	r := strings.NewReader(strings.Repeat("x", 1000))
	Fill(b, r)
	if r.Len() != 0 {
		t.Fatalf("Fill left %d bytes unread after Discard", r.Len())
	}
}
