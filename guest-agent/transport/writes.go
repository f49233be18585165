package transport

import (
	"net"
	"sync"
	"time"
)

// WriteCounter counts completed writes on the connections of the listeners
// it wraps. The agent uses it to power off only after its Shutdown reply
// has been written: ttrpc offers no hook after a reply is sent, and its
// graceful Shutdown can close a connection whose last reply is still queued.
type WriteCounter struct {
	mu      sync.Mutex
	n       uint64
	changed chan struct{}
}

// NewWriteCounter returns a counter at zero.
func NewWriteCounter() *WriteCounter {
	return &WriteCounter{changed: make(chan struct{})}
}

// Count is the number of writes completed so far.
func (w *WriteCounter) Count() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

func (w *WriteCounter) add() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	close(w.changed)
	w.changed = make(chan struct{})
}

// WaitQuiet waits until a write has completed after mark (a Count taken
// before it) and then quiet has passed with no further write, or until max
// has passed. It reports whether a write came.
func (w *WriteCounter) WaitQuiet(mark uint64, quiet, max time.Duration) bool {
	deadline := time.After(max)
	for {
		w.mu.Lock()
		n, changed := w.n, w.changed
		w.mu.Unlock()
		if n > mark {
			select {
			case <-changed:
				continue
			case <-time.After(quiet):
				return true
			case <-deadline:
				return true
			}
		}
		select {
		case <-changed:
		case <-deadline:
			return false
		}
	}
}

// Listener wraps l so that writes on its connections are counted.
func (w *WriteCounter) Listener(l net.Listener) net.Listener {
	return &countingListener{Listener: l, w: w}
}

type countingListener struct {
	net.Listener
	w *WriteCounter
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, w: l.w}, nil
}

type countingConn struct {
	net.Conn
	w *WriteCounter
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.w.add()
	}
	return n, err
}
