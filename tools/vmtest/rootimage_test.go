//go:build vm

package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/hypervisor"
)

// withRootImage boots from build/guest/rootfs.erofs on virtio-pmem instead
// of the initrd, as the plain veil handler does (hypervisor.rootfs_image).
func withRootImage(c *hypervisor.Config) {
	c.Initrd, c.RootImage = "", guestFile("rootfs.erofs")
}

// TestRootImage boots a guest whose / is the shared read-only root image:
// the guest's mount table shows / as erofs, read-only, with DAX (its files
// are the host's pages, not a copy in guest memory), containers run, and
// the chroot escapes find no guest file writable or visible beyond what
// they find on the tmpfs root. It then measures (no assertion on the
// figures) the host PSS of two such VMs against two booted from the
// initrd, idle at agent ready, free page reporting off (the shim's
// default), and how much of it is the image mapping.
func TestRootImage(t *testing.T) {
	ctx := testCtx(t)
	noReclaim := func(c *hypervisor.Config) { c.ReclaimFreedMemory = false }
	type booted struct {
		name string
		v    *vm
	}
	var vms []booted
	t.Cleanup(func() {
		for _, b := range vms {
			if err := b.v.shutdown(); err != nil {
				t.Errorf("shutdown %s: %v", b.name, err)
			}
		}
	})
	for _, b := range []struct {
		name string
		mod  func(*hypervisor.Config)
	}{
		{"pmem-a", func(c *hypervisor.Config) { withRootImage(c); noReclaim(c) }},
		{"pmem-b", func(c *hypervisor.Config) { withRootImage(c); noReclaim(c) }},
		{"initrd-a", noReclaim},
		{"initrd-b", noReclaim},
	} {
		v, err := bootWith(context.Background(), b.name, true, b.mod)
		if err != nil {
			t.Fatalf("booting %s: %v", b.name, err)
		}
		vms = append(vms, booted{b.name, v})
		t.Logf("%s: agent ready after %v", b.name, v.ready)
	}
	image := guestFile("rootfs.erofs")
	for _, b := range vms {
		pss, imgRss, imgPss, imgShared := qemuPSS(t, b.v.q.PID(), image)
		t.Logf("host memory %s: qemu Pss %d KiB; image mapping Rss %d KiB, Pss %d KiB, Shared_Clean %d KiB", b.name, pss, imgRss, imgPss, imgShared)
	}

	v := vms[0].v
	// The guest's own mount table: pid 1's, read from a container in the
	// guest's PID namespace with CAP_SYS_PTRACE.
	s := probeSpec(t)
	s.Process.Args = []string{"cat", "/proc/1/mounts"}
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = ns
	caps := append(append([]string{}, defaultCaps...), "CAP_SYS_PTRACE")
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	r := runProbeContainer(t, ctx, v, "rootimg-mounts", 0o755, s)
	if r.status != 0 {
		t.Fatalf("cat /proc/1/mounts: status %d, stderr %q", r.status, r.stderr)
	}
	root := rootMount(string(r.stdout))
	t.Logf("guest /: %s", root)
	f := strings.Fields(root)
	if len(f) < 4 || f[2] != "erofs" || !hasOpt(f[3], "ro") || !hasOpt(f[3], "dax=always") {
		t.Fatalf("guest / is %q, want erofs mounted ro with dax=always; mounts:\n%s", root, r.stdout)
	}
	if !strings.Contains(string(r.stdout), " /etc tmpfs ") {
		t.Errorf("no tmpfs on /etc for a read-only root:\n%s", r.stdout)
	}
	if strings.Contains(v.console(), "moved the initramfs") {
		t.Errorf("the agent moved an initramfs on a root image boot:\n%s", v.console())
	}

	// Containers run (runc pivots on a real root mount) and see their own
	// rootfs.
	createContainer(t, ctx, v, "rootimg-echo", nil, "echo", "ok")
	startContainer(t, ctx, v, "rootimg-echo")
	if out := finish(t, ctx, v.client, "rootimg-echo", "", false); out.status != 0 || strings.TrimSpace(string(out.stdout)) != "ok" {
		t.Fatalf("echo ok: status %d, stdout %q, stderr %q", out.status, out.stdout, out.stderr)
	}

	// The escapes of TestHardeningChrootEscape, on this root.
	for _, tc := range []struct {
		name, probe string
		caps        []string
	}{
		{"chroot", "escape", defaultCaps},
		{"namespace root", "escape-ns", append(append([]string{}, defaultCaps...), "CAP_SYS_ADMIN")},
	} {
		s := probeSpec(t, tc.probe)
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: tc.caps, Effective: tc.caps, Permitted: tc.caps}
		r := runProbeContainer(t, ctx, v, "rootimg-"+tc.probe, 0o755, s)
		out := string(r.stdout)
		t.Logf("%s: after the escape attempt: %s", tc.name, strings.TrimSpace(out))
		if r.status != 0 || !strings.HasPrefix(out, "escaped: ") {
			t.Fatalf("%s: the escape attempt did not run to the end (status %d): stdout %q stderr %q", tc.name, r.status, out, r.stderr)
		}
		if strings.Contains(out, "visible: ") {
			t.Errorf("%s: a container reached the guest's files:\n%s", tc.name, out)
		}
	}
}

// rootMount is the mount table line of /, the last one (the one on top).
func rootMount(mounts string) string {
	var root string
	for _, l := range strings.Split(mounts, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[1] == "/" {
			root = l
		}
	}
	return root
}

func hasOpt(opts, o string) bool {
	for _, x := range strings.Split(opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// qemuPSS is process pid's Pss (smaps_rollup) and, for its mapping of
// image, the Rss, Pss and Shared_Clean, all in KiB.
func qemuPSS(t *testing.T, pid int, image string) (pss, imgRss, imgPss, imgShared int64) {
	t.Helper()
	pss = kib(t, procField(t, fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"))
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[len(fields)-1] == image
			continue
		}
		if !in || len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "Rss:":
			imgRss += kib(t, fields[1])
		case "Pss:":
			imgPss += kib(t, fields[1])
		case "Shared_Clean:":
			imgShared += kib(t, fields[1])
		}
	}
	return pss, imgRss, imgPss, imgShared
}

func kib(t *testing.T, v string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	if err != nil {
		t.Fatalf("parsing %q: %v", v, err)
	}
	return n
}
