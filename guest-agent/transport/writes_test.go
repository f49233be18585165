package transport

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestWriteCounter(t *testing.T) {
	w := NewWriteCounter()
	inner, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	must(t, err)
	l := w.Listener(inner)
	defer l.Close()
	go func() {
		c, err := net.Dial("unix", inner.Addr().String())
		if err == nil {
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}
	}()
	c, err := l.Accept()
	must(t, err)
	defer c.Close()

	mark := w.Count()
	if w.WaitQuiet(mark, time.Millisecond, 20*time.Millisecond) {
		t.Fatal("WaitQuiet reported a write that did not happen")
	}
	done := make(chan bool)
	go func() { done <- w.WaitQuiet(mark, 5*time.Millisecond, time.Minute) }()
	_, err = c.Write([]byte("reply"))
	must(t, err)
	if !<-done {
		t.Fatal("WaitQuiet missed the write")
	}
	if w.Count() != mark+1 {
		t.Fatalf("Count = %d, want %d", w.Count(), mark+1)
	}
}
