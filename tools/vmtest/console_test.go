//go:build vm

package vmtest

import (
	"bytes"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/guest-agent/console"
	"github.com/veil-runtime/veil/hypervisor/qemu"
)

// TestDebugConsole opens the guest's debug shell twice through the VM's
// console socket: each session is a fresh root shell in the guest (its own
// PID), sees the guest (its kernel, the agent as PID 1), and ends when the
// shell exits.
func TestDebugConsole(t *testing.T) {
	pids := map[string]bool{}
	for i := range 2 {
		conn, err := net.Dial("unix", filepath.Join(shared.state, qemu.DebugConsoleSocket))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		in := strings.NewReader("echo answer-$((6*7)) pid-$$ uid-$(id -u); cat /proc/1/comm; uname -r\nexit\n")
		err = console.Attach(conn, in, &out)
		conn.Close()
		if err != nil {
			t.Fatalf("session %d: %v; output:\n%s", i, err, out.String())
		}
		// The pty echoes the input line too; these match only the output.
		text := out.String()
		m := answer.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("session %d: no answer from a root shell:\n%s", i, text)
		}
		if !strings.Contains(text, "\ninit\r") {
			t.Errorf("session %d: PID 1 is not the agent (/init):\n%s", i, text)
		}
		if pid := m[1]; pids[pid] {
			t.Errorf("session %d reused shell pid %s: not a fresh shell", i, m[1])
		}
		pids[m[1]] = true
	}
}

var answer = regexp.MustCompile(`answer-42 pid-([0-9]+) uid-0`)
