package console

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// TestAttachEndsAtMarker: the session ends when the guest's exit marker
// arrives, even split across reads, and the input reached the guest.
func TestAttachEndsAtMarker(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(guest).ReadString('\n')
		got <- line
		_, _ = guest.Write([]byte("output 42\r\n" + ExitMarker[:5]))
		_, _ = guest.Write([]byte(ExitMarker[5:]))
		_, _ = io.Copy(io.Discard, guest)
	}()
	var out bytes.Buffer
	if err := Attach(host, strings.NewReader("echo 42\n"), &out); err != nil {
		t.Fatal(err)
	}
	if l := <-got; l != "echo 42\n" {
		t.Errorf("guest read %q", l)
	}
	if !strings.Contains(out.String(), "output 42") {
		t.Errorf("output %q", out.String())
	}
}

func TestAttachDetachKeyAndClose(t *testing.T) {
	host, guest := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, guest) }()
	if err := Attach(host, strings.NewReader("ls\n\x1dmore"), io.Discard); err != nil {
		t.Errorf("detach: %v", err)
	}
	host.Close()
	guest.Close()

	host, guest = net.Pipe()
	go func() {
		_, _ = guest.Write([]byte("partial"))
		guest.Close()
	}()
	err := Attach(host, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "closed before the shell exited") {
		t.Errorf("closed connection: %v", err)
	}
}
