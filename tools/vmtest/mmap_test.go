//go:build vm

package vmtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestSharedWritableMmap is issue 15's "cache=none makes writable shared
// mmap fail on the rootfs and volumes": a container on the shared VM (its
// 9p share mounted with qemu.ShareOptions, as a pod's is) writes a file on
// its rootfs and one on a bind-mounted volume through a writable
// MAP_SHARED mapping, msyncs and unmaps; both writes must succeed and the
// host must see the bytes in the files it shares. With cache=none the
// mmap fails with EINVAL (measured 2026-12-07, 6.12 guest kernel).
func TestSharedWritableMmap(t *testing.T) {
	ctx := testCtx(t)
	const cid = "mmap"
	vol := filepath.Join(shared.share, cid, "vol")
	if err := os.MkdirAll(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	s := probeSpec(t, "mmap", "/data.txt", "rootfs-text", "/vol/data.txt", "volume-text")
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: "/run/veil/shared/" + cid + "/vol", Options: []string{"rbind", "rw"}})
	r := runProbeContainer(t, ctx, shared, cid, 0o755, s)
	if r.status != 0 {
		t.Fatalf("writable shared mmap in the container: exit %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
	}
	for path, want := range map[string]string{
		filepath.Join(shared.share, cid, "rootfs", "data.txt"): "rootfs-text",
		filepath.Join(vol, "data.txt"):                         "volume-text",
	} {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("host's %s = %q (%v), want %q written through the guest's mapping", path, b, err, want)
		}
	}
	if !strings.Contains(string(r.stdout), "/vol/data.txt ok") {
		t.Errorf("probe output %q", r.stdout)
	}
}
