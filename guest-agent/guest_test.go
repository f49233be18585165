package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/guest-agent/boot"
)

// TestIsPauseHolder: "pause" on the kernel command line (an init argument,
// with the kernel's HOME and TERM) does not make PID 1 the holder; the
// holder the agent starts (its clean environment) is one.
func TestIsPauseHolder(t *testing.T) {
	saved := os.Environ()
	t.Cleanup(func() {
		os.Clearenv()
		for _, kv := range saved {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	os.Clearenv()
	os.Setenv("HOME", "/")
	os.Setenv("TERM", "linux")
	if IsPauseHolder([]string{"/init", PauseCommand}) {
		t.Error("the kernel's init with a host-given pause argument taken for the holder")
	}
	boot.ClearEnv()
	if !IsPauseHolder([]string{"veil-pause", PauseCommand}) {
		t.Error("the agent's holder not recognised")
	}
	if IsPauseHolder([]string{"/init"}) || IsPauseHolder([]string{"/init", PauseCommand, "x"}) {
		t.Error("other arguments taken for the holder")
	}
}
