package console

import (
	"context"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

// TestSessionRefusedByPolicy drives one session over a socket pair (the
// port's stand-in): a confidential agent whose policy lacks
// allow_debug_console answers with the denial naming the rule and the exit
// marker, starts no shell, and ends the session when the host hangs up.
func TestSessionRefusedByPolicy(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest := fds[0]
	defer unix.Close(guest)
	host := os.NewFile(uintptr(fds[1]), "host")
	if err := unix.SetNonblock(fds[1], false); err != nil {
		t.Fatal(err)
	}
	e := policy.NewEnforcer(true)
	e.SetPolicy(policy.Default())
	s := &Server{Shell: []string{"/bin/false-never-run"}, Allowed: e.DebugConsole}
	done := make(chan struct{})
	go func() {
		s.session(context.Background(), guest)
		close(done)
	}()
	var got strings.Builder
	buf := make([]byte, 512)
	for !strings.Contains(got.String(), ExitMarker) {
		n, err := host.Read(buf)
		if err != nil {
			t.Fatalf("reading the refusal: %v (so far %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	if !strings.Contains(got.String(), "debug console refused") || !strings.Contains(got.String(), "rule allow_debug_console") {
		t.Fatalf("refusal %q does not name the rule", got.String())
	}
	host.Close()
	<-done
}
