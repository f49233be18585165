package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFindPort(t *testing.T) {
	sys := t.TempDir()
	for dev, name := range map[string]string{"vport1p1": "org.qemu.guest_agent.0", "vport2p1": "veil.agent\n"} {
		must(t, os.MkdirAll(filepath.Join(sys, dev), 0o755))
		must(t, os.WriteFile(filepath.Join(sys, dev, "name"), []byte(name), 0o644))
		must(t, os.WriteFile(filepath.Join(sys, dev, "dev"), []byte("249:1\n"), 0o644))
	}
	dev, num, err := FindPort(sys, "veil.agent")
	if err != nil || dev != "vport2p1" || num != "249:1" {
		t.Fatalf("FindPort = %q, %q, %v; want vport2p1, 249:1", dev, num, err)
	}
	if _, _, err := FindPort(sys, "nope"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing port: err = %v, want ErrNotExist", err)
	}
}

func TestParseDevNumber(t *testing.T) {
	n, err := ParseDevNumber("249:1\n")
	if err != nil || unix.Major(n) != 249 || unix.Minor(n) != 1 {
		t.Fatalf("ParseDevNumber = %d (%d:%d), %v", n, unix.Major(n), unix.Minor(n), err)
	}
	for _, bad := range []string{"", "249", "a:1", "1:b"} {
		if _, err := ParseDevNumber(bad); err == nil {
			t.Errorf("ParseDevNumber(%q) accepted", bad)
		}
	}
}

// TestSerialListenerOneConnectionAtATime uses a FIFO as a stand-in port:
// it polls as connected while the test holds it open.
func TestSerialListenerOneConnectionAtATime(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "port")
	must(t, unix.Mkfifo(fifo, 0o600))
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	must(t, err)
	defer w.Close()
	first := frame(1, frameRequest, "one")
	second := frame(1, frameRequest, "two")
	_, err = w.Write(append(append([]byte{}, first...), second...))
	must(t, err)

	l := ListenSerial(fifo)
	c1, err := l.Accept()
	must(t, err)
	got, err := io.ReadAll(c1)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first connection read %q, %v", got, err)
	}
	second2 := make(chan net.Conn)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		second2 <- c
	}()
	must(t, c1.Close())
	c2 := <-second2
	if _, err := c1.Write([]byte("stale")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on an ended connection = %v, want net.ErrClosed", err)
	}
	buf := make([]byte, len(second))
	if _, err := io.ReadFull(c2, buf); err != nil || !bytes.Equal(buf, second) {
		t.Fatalf("second connection read %q, %v", buf, err)
	}
	must(t, c2.Close())
	must(t, l.Close())
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
}

// TestSerialListenerCloseKeepsActiveConnection pins the lost Shutdown
// reply: ttrpc's graceful Shutdown closes the listener before the last
// reply is written, so the open connection must keep working.
func TestSerialListenerCloseKeepsActiveConnection(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "port")
	must(t, unix.Mkfifo(fifo, 0o600))
	host, err := os.OpenFile(fifo, os.O_RDWR, 0)
	must(t, err)
	defer host.Close()
	l := ListenSerial(fifo)
	c, err := l.Accept()
	must(t, err)
	must(t, l.Close())
	if _, err := c.Write([]byte("reply")); err != nil {
		t.Fatalf("write after the listener closed: %v", err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "reply" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	must(t, c.Close())
	if l.port != nil {
		t.Fatal("port left open after the last connection closed")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
