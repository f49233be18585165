package stream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
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

// pattern is n bytes that do not repeat with a period dividing common
// buffer sizes, so a tail from the wrong place cannot match by chance.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte((i*7 + i/251) % 253)
	}
	return p
}

// A process whose output nobody may read writes 10 MiB through its pipe
// with no reader at all: the copier never blocks, reaches the pipe's EOF,
// and the buffer keeps the last 64 KiB.
func TestDrainNeverBlocksAndKeepsTheTail(t *testing.T) {
	const total, tail = 10 << 20, 64 << 10
	want := pattern(total)
	b := NewDrain(tail)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		Fill(b, r)
		r.Close()
	}()
	written := make(chan error, 1)
	go func() {
		// Odd-sized writes, as a process's would be.
		for i := 0; i < len(want); i += 10007 {
			if _, err := w.Write(want[i:min(i+10007, len(want))]); err != nil {
				written <- err
				return
			}
		}
		written <- w.Close()
	}()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("writing 10 MiB into the pipe: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the writer blocked: nobody reads a draining buffer, so it must never fill")
	}
	<-filled // Fill returned: the pipe's EOF reached the buffer
	got, n := b.Tail()
	if n != total {
		t.Errorf("Tail counted %d bytes written, want %d", n, total)
	}
	if !bytes.Equal(got, want[total-tail:]) {
		t.Errorf("Tail holds %d bytes, not the last %d written", len(got), tail)
	}
	if b.Len() != tail {
		t.Errorf("Len = %d, want the tail size %d", b.Len(), tail)
	}
	if _, err := b.Write([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after the end of the stream = %v, want ErrClosed", err)
	}
}

func TestDrainTailAcrossWriteSizes(t *testing.T) {
	for _, size := range []int{1, 3, 15, 16, 17, 100} {
		b := NewDrain(16)
		want := pattern(1000)
		for i := 0; i < len(want); i += size {
			if n, err := b.Write(want[i:min(i+size, len(want))]); err != nil || n != min(size, len(want)-i) {
				t.Fatalf("size %d: Write = %d, %v", size, n, err)
			}
		}
		got, total := b.Tail()
		if !bytes.Equal(got, want[len(want)-16:]) || total != 1000 {
			t.Errorf("writes of %d: Tail = %v (%d written), want the last 16 bytes of 1000", size, got, total)
		}
	}
	short := NewDrain(16)
	_, _ = short.Write([]byte("abc"))
	if got, _ := short.Tail(); string(got) != "abc" {
		t.Errorf("Tail of a short stream = %q, want abc", got)
	}
}

func TestDrainRefusesReadsAndReadableHasNoTail(t *testing.T) {
	b := NewDrain(8)
	_, _ = b.Write([]byte("secret"))
	if _, err := b.Read(context.Background(), 10); !errors.Is(err, ErrNotReadable) {
		t.Errorf("Read of a draining buffer = %v, want ErrNotReadable", err)
	}
	b.CloseWrite()
	if _, err := b.Read(context.Background(), 10); !errors.Is(err, ErrNotReadable) {
		t.Errorf("Read of a draining buffer at its end = %v, want ErrNotReadable", err)
	}
	b.Discard()
	if got, _ := b.Tail(); len(got) != 0 {
		t.Errorf("Tail after Discard = %q", got)
	}
	if _, err := b.Read(context.Background(), 10); !errors.Is(err, io.EOF) {
		t.Errorf("Read of a discarded draining buffer = %v, want EOF", err)
	}
	r := NewBuffer(8)
	_, _ = r.Write([]byte("data"))
	if got, n := r.Tail(); got != nil || n != 0 || r.Draining() || !b.Draining() {
		t.Errorf("a readable buffer's Tail = %q, %d (Draining %v): its data is the host's", got, n, r.Draining())
	}
}
