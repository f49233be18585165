// Package stream holds a process's output between its pipe and the host:
// a bounded, ordered byte buffer with end-of-stream. The writer (a goroutine
// copying from the pipe) blocks while the buffer is full, so a process that
// writes faster than the host reads is slowed down by its pipe instead of
// growing the agent's memory. Readers block until data or end of stream.
//
// A buffer made with NewDrain is for output the host may not read (a
// confidential pod whose policy denies reading output): writes never
// block, only the last bytes are kept (Tail, for the pod owner's
// diagnostics), and reads are refused with ErrNotReadable. Backpressure
// there would block the process forever, since no reader will come.
package stream

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrClosed is returned to a writer after the buffer has been discarded.
var ErrClosed = errors.New("stream buffer closed")

// ErrNotReadable is returned by Read on a draining buffer (NewDrain).
var ErrNotReadable = errors.New("output is drained in the guest, not kept for the host")

// Buffer is a bounded FIFO of bytes with one end-of-stream mark, or, made
// with NewDrain, a tail of the last bytes written.
type Buffer struct {
	mu      sync.Mutex
	data    []byte
	limit   int
	drain   bool  // NewDrain: writes never block, data is the tail
	total   int64 // bytes written, in drain mode
	eof     bool  // the writer is done: readers get io.EOF once data is drained
	dropped bool  // Discard was called: writers fail, readers get io.EOF
	changed chan struct{}
}

// NewBuffer returns a Buffer that holds at most limit bytes.
func NewBuffer(limit int) *Buffer {
	if limit <= 0 {
		limit = 1
	}
	return &Buffer{limit: limit, changed: make(chan struct{})}
}

// NewDrain returns a Buffer for output nobody may read: Write never
// blocks and keeps only the last tail bytes (Tail); Read returns
// ErrNotReadable, or io.EOF once the buffer was discarded.
func NewDrain(tail int) *Buffer {
	b := NewBuffer(tail)
	b.drain = true
	return b
}

// Draining reports whether b was made with NewDrain.
func (b *Buffer) Draining() bool { return b.drain }

// notify wakes every waiter; the caller holds mu.
func (b *Buffer) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Write appends p, blocking while the buffer is full. It returns ErrClosed
// when the buffer was discarded. A draining buffer never blocks: it keeps
// the last bytes and forgets the older ones.
func (b *Buffer) Write(p []byte) (int, error) {
	if b.drain {
		return b.writeTail(p)
	}
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

// writeTail appends p to a draining buffer, keeping the last limit bytes.
func (b *Buffer) writeTail(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped || b.eof {
		return 0, ErrClosed
	}
	b.total += int64(len(p))
	if len(p) >= b.limit {
		b.data = append(b.data[:0], p[len(p)-b.limit:]...)
		return len(p), nil
	}
	if over := len(b.data) + len(p) - b.limit; over > 0 {
		rest := copy(b.data, b.data[over:])
		b.data = b.data[:rest]
	}
	b.data = append(b.data, p...)
	return len(p), nil
}

// Tail returns a copy of what a draining buffer kept (the last bytes
// written, at most its tail size) and how many bytes were written in all.
// For a readable buffer it returns nothing: its data is the host's.
func (b *Buffer) Tail() (tail []byte, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.drain {
		return nil, 0
	}
	return append([]byte(nil), b.data...), b.total
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
// error. A draining buffer returns ErrNotReadable at once (io.EOF once
// discarded).
func (b *Buffer) Read(ctx context.Context, n int) ([]byte, error) {
	if b.drain {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.dropped {
			return nil, io.EOF
		}
		return nil, ErrNotReadable
	}
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

// Len reports how many bytes are buffered (for a draining buffer, the
// size of its tail).
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
