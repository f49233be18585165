//go:build e2e

package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// TestDebugConsole: `veil debug console <sandbox prefix>` opens a root
// shell in a veil pod's VM. The shim links its hypervisor driver's debug
// console socket into the pod's state directory (shim.DebugConsoleLink),
// and the CLI dials that link: the path comes from the driver, not from
// QEMU's file names. The shell's answer to arithmetic the host never
// writes out, and a kernel release other than the host's, prove the
// commands ran in the guest.
func TestDebugConsole(t *testing.T) {
	// Under the veil handler only: the runc and veil-dev pods have no
	// debug console (veil-dev's policy refuses it).
	forEachHandler(t, func(t *testing.T, handler string) {
		if handler != harness.Veil {
			return
		}
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "debug-console")
		cmd := exec.CommandContext(ctx, filepath.Join(env.RepoRoot, "build/bin/veil"), "debug", "console", pod.ID[:12])
		cmd.Stdin = strings.NewReader("echo guest-$((6*7)) kernel-$(uname -r)\nexit\n")
		out, err := env.Run(ctx, cmd)
		if err != nil {
			t.Fatalf("veil debug console: %v\n%s", err, out)
		}
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			t.Fatal(err)
		}
		host := unix.ByteSliceToString(uts.Release[:])
		if !strings.Contains(out, "guest-42 kernel-") || strings.Contains(out, "kernel-"+host) {
			t.Errorf("veil debug console output lacks the guest shell's answer (guest-42 and a kernel other than the host's %s):\n%s", host, out)
		}
	})
}
