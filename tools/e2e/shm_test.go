//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestPodShm is issue 15's "/dev/shm of a veil pod is a host tmpfs over
// 9p": in a pod of two containers, /dev/shm is a tmpfs of the CRI's size
// (64 MiB) under every handler (under veil a guest tmpfs, no longer the
// host's shared over 9p), and what one container writes there the other
// reads (one /dev/shm per pod, as under runc).
func TestPodShm(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "shm-"+handler)
		image := env.Image(testimages.BusyboxImage)
		var ids []string
		for _, name := range []string{"writer", "reader"} {
			id, err := env.StartContainer(ctx, pod, harness.ContainerConfig(name, image, []string{"sleep", "3600"}, false))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		var line string
		for _, l := range strings.Split(crictl(t, ctx, "exec", ids[0], "cat", "/proc/mounts"), "\n") {
			if f := strings.Fields(l); len(f) > 3 && f[1] == "/dev/shm" {
				line = l
			}
		}
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "tmpfs" || !strings.Contains(f[3], "size=65536k") {
			t.Errorf("%s: /dev/shm is mounted as %q, want a tmpfs with size=65536k", handler, line)
		}
		crictl(t, ctx, "exec", ids[0], "sh", "-c", "echo shared-"+handler+" > /dev/shm/x")
		if got := strings.TrimSpace(crictl(t, ctx, "exec", ids[1], "cat", "/dev/shm/x")); got != "shared-"+handler {
			t.Errorf("%s: the other container read %q from /dev/shm/x", handler, got)
		}
	})
}
