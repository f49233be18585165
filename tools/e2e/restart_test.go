//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestLogsSurviveContainerdRestart is issue 15's "output written while
// containerd restarts loses that container's logs for the rest of its
// life": a container prints a counter five times a second; containerd is
// restarted (SIGTERM, started again with the same config, as a node's
// service manager does) while it prints; then an exec creates a marker
// file the loop reports on every later line. crictl logs must show lines
// written after the restart (with the marker) and every counter from 0 up
// with no gap, so nothing written while containerd was away was lost.
// Before the fix veil's shim had opened the FIFOs write-only and dropped
// them at the first EPIPE: the log ended at the restart.
func TestLogsSurviveContainerdRestart(t *testing.T) {
	useOwnEnv(t, "restart-logs")
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "restart-logs-"+handler)
		script := `i=0; while true; do if [ -e /tmp/mark ]; then echo "n=$i after"; else echo "n=$i"; fi; i=$((i+1)); sleep 0.2; done`
		cfg := harness.ContainerConfig("counter", env.Image(testimages.BusyboxImage), []string{"sh", "-c", script}, false)
		id, err := env.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		waitLogs(t, ctx, id, "n=5\n", 2*time.Minute)
		start := time.Now()
		if err := env.RestartContainerd(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: containerd restarted in %s", handler, time.Since(start).Round(100*time.Millisecond))
		crictl(t, ctx, "exec", id, "touch", "/tmp/mark")
		logs := waitLogs(t, ctx, id, " after\n", 2*time.Minute)
		lines := nonEmptyLines(logs)
		for i, l := range lines {
			n, _, _ := strings.Cut(strings.TrimPrefix(l, "n="), " ")
			if got, err := strconv.Atoi(n); err != nil || got != i {
				t.Fatalf("%s: log line %d is %q, want counter %d (output lost around the restart?):\n%s", handler, i, l, i, logs)
			}
		}
		t.Logf("%s: %d lines, contiguous, the last %q", handler, len(lines), lines[len(lines)-1])
	})
}
