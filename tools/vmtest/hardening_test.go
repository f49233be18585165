//go:build vm

package vmtest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Guest-side hardening (guest-agent/boot, guest-agent/containers/harden.go)
// against the real agent and runc in a real guest.

var probeOnce struct {
	sync.Once
	path string
	err  error
}

// probeBinary builds testdata/probe (static) once per test run.
func probeBinary(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "veil-vmtest-probe-")
		if err != nil {
			probeOnce.err = err
			return
		}
		probeOnce.path = filepath.Join(dir, "probe")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", probeOnce.path, "./testdata/probe")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeOnce.err = err
			t.Logf("%s", out)
		}
	})
	if probeOnce.err != nil {
		t.Fatalf("building the probe: %v", probeOnce.err)
	}
	return probeOnce.path
}

// runProbeContainer runs spec (a containerSpec with changes) to completion
// on a busybox rootfs that also holds the probe at /bin/probe, with the
// probe's mode set to probeMode.
func runProbeContainer(t *testing.T, ctx context.Context, v *vm, cid string, probeMode os.FileMode, spec specs.Spec) result {
	t.Helper()
	makeRootfs(t, v, cid)
	b, err := os.ReadFile(probeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(v.share, cid, "rootfs", "bin", "probe")
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, probeMode); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: cid, Spec: raw, Rootfs: &api.Storage{Driver: "shared", Source: cid + "/rootfs"},
	}); err != nil {
		t.Fatalf("CreateContainer %s: %v", cid, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := v.client.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: cid, Force: true}); err != nil {
			t.Errorf("RemoveContainer %s: %v", cid, err)
		}
	})
	startContainer(t, ctx, v, cid)
	return finish(t, ctx, v.client, cid, "", false)
}

// probeSpec is containerSpec running the probe with args.
func probeSpec(t *testing.T, args ...string) specs.Spec {
	t.Helper()
	var s specs.Spec
	if err := json.Unmarshal(containerSpec(append([]string{"/bin/probe"}, args...)...), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHardeningChrootEscape: a container tries to reach the guest's files
// from inside its root. "chroot" is the classic escape with CAP_SYS_CHROOT
// (in the default set): chroot into a subdirectory, climb out with "..",
// chroot there. "namespace root" adds CAP_SYS_ADMIN (a privileged
// container): detach its root mount and re-enter its own mount namespace,
// which puts it at the namespace's root mount. With runc --no-pivot in the
// initramfs that root was the initramfs itself, under the guest's whole
// mount tree (/init, runc, every container's bundle); now runc pivots in a
// tmpfs root and what is left below is the emptied initramfs. (Measured
// with the image from before the change: "namespace root" saw /init,
// /usr/bin/runc, /etc/veil/modules (since gone: the kernel has no modules)
// and /run/veil/containers; "chroot" did
// not get out even then, since runc --no-pivot moves the container's root
// mount onto / and ".." stops at the top of that stack on Linux 6.12. It
// stays as a guard. A bind mount of the initramfs moved over / instead of
// the copy, tried as a zero-copy switch, fails "namespace root": the
// rootfs then still holds /init, /usr/bin/runc and /etc/veil/modules.)
func TestHardeningChrootEscape(t *testing.T) {
	for _, tc := range []struct {
		name, probe string
		caps        []string
	}{
		{"chroot", "escape", defaultCaps},
		{"namespace root", "escape-ns", append(append([]string{}, defaultCaps...), "CAP_SYS_ADMIN")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := probeSpec(t, tc.probe)
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: tc.caps, Effective: tc.caps, Permitted: tc.caps}
			r := runProbeContainer(t, ctx, shared, "escape-"+tc.probe, 0o755, s)
			out := string(r.stdout)
			t.Logf("after the escape attempt: %s", strings.TrimSpace(out))
			if r.status != 0 || !strings.HasPrefix(out, "escaped: ") {
				t.Fatalf("the escape attempt did not run to the end (status %d): stdout %q stderr %q", r.status, out, r.stderr)
			}
			if strings.Contains(out, "visible: ") {
				t.Fatalf("a container reached the guest's files:\n%s", out)
			}
		})
	}
}

// TestHardeningSetuidVolume: a setuid-root executable copied in through
// the Volume service (as a hostile host would, into a configMap copy) and
// bound read-only into a container does not make a uid 1000 process root.
// The same file in the container's image rootfs does (the control: the
// probe and the setuid path work).
func TestHardeningSetuidVolume(t *testing.T) {
	ctx := testCtx(t)
	b, err := os.ReadFile(probeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shared.client.Volume.CopyFile(ctx, &api.CopyFileRequest{
		Volume: "hardening-suid", Path: "probe", Kind: api.CopyFileRequest_FILE, Data: b, Mode: 0o4755,
	}); err != nil {
		t.Fatalf("CopyFile: %v", err)
	}
	asUser := func(s specs.Spec) specs.Spec {
		s.Process.User = specs.User{UID: 1000, GID: 1000}
		s.Process.NoNewPrivileges = false // or setuid would never apply
		return s
	}

	control := asUser(probeSpec(t, "euid"))
	r := runProbeContainer(t, ctx, shared, "suid-image", os.ModeSetuid|0o755, control)
	if got := strings.TrimSpace(string(r.stdout)); got != "euid=0" {
		t.Fatalf("control: setuid probe in the image rootfs printed %q (stderr %q), want euid=0", got, r.stderr)
	}

	s := asUser(probeSpec(t, "euid"))
	s.Process.Args = []string{"/vol/probe", "euid"}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/vol", Type: "bind",
		Source: "/run/veil/volumes/hardening-suid", Options: []string{"rbind", "ro", "suid"}})
	r = runProbeContainer(t, ctx, shared, "suid-volume", 0o755, s)
	if got := strings.TrimSpace(string(r.stdout)); got != "euid=1000" {
		t.Fatalf("setuid-root file from a guest volume printed %q (stderr %q), want euid=1000", got, r.stderr)
	}
}

// TestHardeningKernelEnv boots a guest whose command line carries
// LD_PRELOAD=/nonexistent.so VEIL_EVIL=1, which the kernel hands /init as
// environment, and the word "pause", which it hands /init as an argument:
// the agent (pid 1), runc (whose ld.so would complain about the preload on
// the container's stderr) and the container see neither variable, and the
// agent serves (it did not become a PID namespace holder). A container in
// the pod's PID namespace then sees the real holder, with the agent's
// clean environment, and the console shows one agent start.
func TestHardeningKernelEnv(t *testing.T) {
	ctx := testCtx(t)
	v, err := bootArgs(ctx, "kenv", true, []string{"LD_PRELOAD=/nonexistent.so", "VEIL_EVIL=1", "pause"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	if !strings.Contains(readCmdline(t, ctx, v), "LD_PRELOAD=/nonexistent.so") {
		t.Fatal("the kernel command line lacks the test's LD_PRELOAD")
	}
	// The guest's PID namespace (no pid namespace in the spec) and
	// CAP_SYS_PTRACE, to read pid 1's environment.
	s := probeSpec(t, "environ")
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = ns
	caps := append(append([]string{}, defaultCaps...), "CAP_SYS_PTRACE")
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	r := runProbeContainer(t, ctx, v, "kenv", 0o755, s)
	out := string(r.stdout)
	t.Logf("environments:\n%s", out)
	if r.status != 0 || !strings.Contains(out, "pid1: PATH=") || !strings.Contains(out, "self: PATH=/bin") {
		t.Fatalf("probe status %d, stdout %q, stderr %q", r.status, out, r.stderr)
	}
	for _, bad := range []string{"LD_PRELOAD", "nonexistent.so", "VEIL_EVIL"} {
		if strings.Contains(out, bad) || strings.Contains(string(r.stderr), bad) {
			t.Errorf("%s reached the guest: stdout %q stderr %q", bad, out, r.stderr)
		}
	}

	pod := probeSpec(t, "environ")
	for i, n := range pod.Linux.Namespaces {
		if n.Type == specs.PIDNamespace {
			pod.Linux.Namespaces[i].Path = "/proc/self/ns/pid" // the CRI's way of asking for the pod's
		}
	}
	pod.Process.Capabilities = s.Process.Capabilities
	r = runProbeContainer(t, ctx, v, "kenv-pod", 0o755, pod)
	if got := string(r.stdout); r.status != 0 || !strings.Contains(got, "pid1: PATH=/usr/sbin:/usr/bin:/sbin:/bin\n") || strings.Count(got, "pid1: ") != 1 {
		t.Errorf("the pod's PID namespace holder: status %d, stdout %q, stderr %q; want only the agent's PATH", r.status, got, r.stderr)
	}
	if n := strings.Count(v.console(), "msg=starting"); n != 1 {
		t.Errorf("the console shows %d agent starts, want 1:\n%s", n, v.console())
	}
	if line := consoleLine(v.console(), "moved the initramfs into a tmpfs root"); line != "" {
		t.Logf("console: %s", line)
	}
}

// readCmdline returns the guest's /proc/cmdline, read by a container.
func readCmdline(t *testing.T, ctx context.Context, v *vm) string {
	t.Helper()
	createContainer(t, ctx, v, "cmdline", nil, "cat", "/proc/cmdline")
	startContainer(t, ctx, v, "cmdline")
	return string(finish(t, ctx, v.client, "cmdline", "", false).stdout)
}

func consoleLine(console, substr string) string {
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, substr) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
