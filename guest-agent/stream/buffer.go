// Package stream holds a process's output between its pipe and the host:
// a bounded, ordered byte buffer with end-of-stream. The writer (a goroutine
// copying from the pipe) blocks while the buffer is full, so a process that
// writes faster than the host reads is slowed down by its pipe instead of
// growing the agent's memory. Readers block until data or end of stream.
package stream

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrClosed is returned to a writer after the buffer has been discarded.
var ErrClosed = errors.New("stream buffer closed")

// Buffer is a bounded FIFO of bytes with one end-of-stream mark.
type Buffer struct {
	mu      sync.Mutex
	data    []byte
	limit   int
	eof     bool // the writer is done: readers get io.EOF once data is drained
	dropped bool // Discard was called: writers fail, readers get io.EOF
	changed chan struct{}
}

// NewBuffer returns a Buffer that holds at most limit bytes.
func NewBuffer(limit int) *Buffer {
	if limit <= 0 {
		limit = 1
	}
	return &Buffer{limit: limit, changed: make(chan struct{})}
}

// notify wakes every waiter; the caller holds mu.
func (b *Buffer) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Write appends p, blocking while the buffer is full. It returns ErrClosed
// when the buffer was discarded.
func (b *Buffer) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b.mu.Lock()
		if b.dropped {
			b.mu.Unlock()
			return n, ErrClosed
		}
		if b.eof {
			b.mu.Unlock()
			return n, ErrClosed
		}
		room := b.limit - len(b.data)
		if room == 0 {
			wait := b.changed
			b.mu.Unlock()
			<-wait
			continue
		}
		chunk := min(room, len(p)-n)
		b.data = append(b.data, p[n:n+chunk]...)
		n += chunk
		b.notify()
		b.mu.Unlock()
	}
	return n, nil
}

// CloseWrite marks the end of the stream: readers get the remaining data,
// then io.EOF.
func (b *Buffer) CloseWrite() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.eof {
		b.eof = true
		b.notify()
	}
}

// Discard drops buffered data and fails pending and later writes; readers
// get io.EOF. It releases the buffer's memory when nobody will read it.
func (b *Buffer) Discard() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = nil
	b.dropped = true
	b.notify()
}

// Read blocks until data is available and returns up to n bytes of it, in
// order. At the end of the stream it returns io.EOF; when ctx ends first, its
// error.
func (b *Buffer) Read(ctx context.Context, n int) ([]byte, error) {
	if n <= 0 {
		n = 1
	}
	for {
		b.mu.Lock()
		if len(b.data) > 0 {
			k := min(n, len(b.data))
			out := make([]byte, k)
			copy(out, b.data)
			// Shift rather than reslice so the backing array does not
			// creep forward and reallocate on every append.
			rest := copy(b.data, b.data[k:])
			b.data = b.data[:rest]
			b.notify()
			b.mu.Unlock()
			return out, nil
		}
		if b.eof || b.dropped {
			b.mu.Unlock()
			return nil, io.EOF
		}
		wait := b.changed
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Len reports how many bytes are buffered.
func (b *Buffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.data)
}

// Fill copies r into b until r ends, then marks the end of the stream. A
// read error other than io.EOF (EIO from a pty master whose terminal closed)
// also ends the stream. When b was discarded, Fill keeps draining r so the
// writing process is not blocked on a full pipe.
func Fill(b *Buffer, r io.Reader) {
	defer b.CloseWrite()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := b.Write(buf[:n]); werr != nil {
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
		if err != nil {
			return
		}
	}
}
