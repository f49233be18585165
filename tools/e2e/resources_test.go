//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// cgroupControllers are the host's v1 hierarchies the sandbox's cgroup is
// checked in (this host's cgroups are hybrid: controllers on v1).
var cgroupControllers = []string{"memory", "cpu", "pids"}

// cgroupOf returns pid's cgroup path in the v1 hierarchy of controller,
// or in the v2 hierarchy when controller is "".
func cgroupOf(pid int, controller string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2], nil
			}
		}
	}
	return "", fmt.Errorf("process %d is in no %q hierarchy: %s", pid, controller, b)
}

// sandboxPid is the pid containerd reports for a pod's sandbox: the pause
// process under runc, the QEMU process under veil.
func sandboxPid(t *testing.T, ctx context.Context, podID string) int {
	t.Helper()
	var v struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(crictl(t, ctx, "inspectp", "-o", "json", podID)), &v); err != nil {
		t.Fatal(err)
	}
	if v.Info.Pid <= 0 {
		t.Fatalf("crictl inspectp %s: no sandbox pid", podID)
	}
	return v.Info.Pid
}

// TestPodCgroup runs a pod with a cgroup parent, as kubelet does, and
// finds the sandbox's process (QEMU under veil) in the sandbox's cgroup
// below that parent in every controller; after the pod is removed that
// cgroup is gone.
func TestPodCgroup(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		parent := fmt.Sprintf("/veil-e2e-pods/pod-%s-%d", handler, os.Getpid())
		t.Cleanup(func() {
			// The parent, as kubelet would, in every hierarchy runc or veil made it.
			for _, dir := range []string{parent, filepath.Dir(parent)} {
				found, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", dir))
				for _, d := range found {
					_ = unix.Rmdir(d)
				}
			}
		})
		pod, err := env.RunPodWith(ctx, handler, "cgroup-"+handler, func(c map[string]any) {
			c["linux"] = map[string]any{"cgroup_parent": parent}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, _ = env.Run(ctx, env.Crictl(ctx, "rmp", "--force", pod.ID))
		})
		id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("sleeper", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}

		pid := sandboxPid(t, ctx, pod.ID)
		want := parent + "/" + pod.ID
		for _, c := range cgroupControllers {
			got, err := cgroupOf(pid, c)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("sandbox process %d is in %s cgroup %s, want %s", pid, c, got, want)
			}
		}
		// The pod's memory is charged to the pod: under veil that is the
		// VM's guest memory, far more than a pause process.
		usage, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", want, "memory.usage_in_bytes"))
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.ParseInt(strings.TrimSpace(string(usage)), 10, 64); handler != harness.Runc && n < 32<<20 {
			t.Errorf("the sandbox cgroup of a %s pod is charged %d bytes, want the VM's memory (at least 32 MiB)", handler, n)
		}

		if err := env.RemovePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", want))
		for _, dir := range left {
			t.Errorf("after removing the pod its cgroup %s is still there", dir)
		}
	})
}

// TestContainerOOMKilled gives a container a 32 MiB memory limit and lets
// it allocate 200 MiB: the kernel (the guest's, under veil) kills it, and
// the CRI reports exit 137 and reason OOMKilled; the pod survives and runs
// a next container.
func TestContainerOOMKilled(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "oom-"+handler)
		image := env.Image(testimages.BusyboxImage)
		cfg := harness.ContainerConfig("hog", image, []string{"sh", "-c", `x=$(head -c 200m /dev/zero | tr "\0" x); echo survived ${#x}`}, false)
		cfg["linux"] = map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 32 << 20}}
		id, err := env.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 137 || st.Reason != "OOMKilled" {
			t.Errorf("memory hog exited %d reason %q, want 137 OOMKilled (log: %q)", st.ExitCode, st.Reason, crictl(t, ctx, "logs", id))
		}
		// The VM (the pod) survived its container's OOM kill.
		next, err := env.StartContainer(ctx, pod, harness.ContainerConfig("after", image, []string{"sh", "-c", "echo still-here"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if st, err := env.WaitContainer(ctx, next, "CONTAINER_EXITED", 2*time.Minute); err != nil || st.ExitCode != 0 {
			t.Errorf("container after the OOM kill: %+v, %v; want exit 0", st, err)
		}
	})
}

// TestOOMKilledOverLimitWithoutPodLimit is the allocation a small VM got
// wrong: a pod without limits (no sandbox memory annotation) runs a
// container limited to 64 MiB that asks for one 256 MiB buffer (busybox dd
// allocates bs at once, then fills it from /dev/zero). Under runc the
// allocation succeeds and the container's cgroup OOM-kills dd while it
// fills the buffer; a 256 MiB VM's guest kernel refused the allocation
// itself (overcommit counts the VM's RAM) and dd failed with exit 1.
// With the default pod size (hypervisor.default_memory_mib, 2048 MiB) the
// guest behaves as runc's host: exit 137, reason OOMKilled.
func TestOOMKilledOverLimitWithoutPodLimit(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "oom-nolimit-"+handler)
		image := env.Image(testimages.BusyboxImage)
		if handler != harness.Runc {
			// The guest has the default size, not memory_mib's 256 MiB.
			probe, err := env.StartContainer(ctx, pod, harness.ContainerConfig("meminfo", image, []string{"sh", "-c", "sleep 3600"}, false))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.WaitContainer(ctx, probe, "CONTAINER_RUNNING", time.Minute); err != nil {
				t.Fatal(err)
			}
			line := strings.Fields(crictl(t, ctx, "exec", "--sync", probe, "head", "-n1", "/proc/meminfo"))
			if len(line) < 2 {
				t.Fatalf("guest /proc/meminfo first line: %q", line)
			}
			kib, err := strconv.ParseUint(line[1], 10, 64)
			if err != nil || kib < 1800<<10 || kib > 2048<<10 {
				t.Errorf("guest MemTotal of a pod without limits: %v kB (%v), want about 2048 MiB (default_memory_mib)", line, err)
			}
		}
		cfg := harness.ContainerConfig("hog", image, []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"}, false)
		cfg["linux"] = map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20}}
		id, err := env.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 3*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 137 || st.Reason != "OOMKilled" {
			t.Errorf("256 MiB allocation under a 64 MiB limit exited %d reason %q, want 137 OOMKilled as under runc (log: %q)", st.ExitCode, st.Reason, crictl(t, ctx, "logs", id))
		}
	})
}

// TestUpdateContainerResources changes a running container's memory limit
// and CPU quota with crictl update and reads them back from the
// container's own cgroup files: the guest's cgroup v2 under veil, the
// host's v1 under runc.
func TestUpdateContainerResources(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "update-"+handler)
		cfg := harness.ContainerConfig("sleeper", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false)
		cfg["linux"] = map[string]any{"resources": map[string]any{"memory_limit_in_bytes": 64 << 20}}
		id, err := env.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}
		memFile, cpuCmd := "/sys/fs/cgroup/memory.max", "cat /sys/fs/cgroup/cpu.max"
		wantCPU := "50000 100000"
		if handler == harness.Runc {
			memFile = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
			cpuCmd = "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
		}
		read := func(cmd string) string {
			return strings.TrimSpace(crictl(t, ctx, "exec", "--sync", id, "sh", "-c", cmd))
		}
		if got := read("cat " + memFile); got != strconv.Itoa(64<<20) {
			t.Fatalf("memory limit before the update: %s, want %d", got, 64<<20)
		}
		crictl(t, ctx, "update", "--memory", strconv.Itoa(96<<20), "--cpu-period", "100000", "--cpu-quota", "50000", id)
		if got := read("cat " + memFile); got != strconv.Itoa(96<<20) {
			t.Errorf("memory limit after crictl update: %s, want %d", got, 96<<20)
		}
		if got := read(cpuCmd); got != wantCPU {
			t.Errorf("cpu quota and period after crictl update: %q, want %q", got, wantCPU)
		}
	})
}

// blockPattern is what the block device test writes to its loop device.
const blockPattern = "veil-block-volume-pattern-0123456789"

// loopDevice backs a loop device with a 4 MiB file starting with
// blockPattern and detaches it when the test ends.
func loopDevice(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, 4<<20)
	copy(data, blockPattern)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestBlockDevice gives a container a host block device, as the CRI does
// for a raw block volume: under veil it is hot-plugged into the VM as a
// virtio-blk disk and the container reads the pattern back with dd at its
// container path; removing the container detaches it from the VM (the
// loop device is then free: QEMU has closed it).
func TestBlockDevice(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		dev := loopDevice(t)
		pod := runPod(t, ctx, handler, "block-"+handler)
		cfg := harness.ContainerConfig("reader", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false)
		cfg["devices"] = []map[string]any{{"container_path": "/dev/xvda", "host_path": dev, "permissions": "rwm"}}
		id, err := env.StartContainer(ctx, pod, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}
		read := fmt.Sprintf("dd if=/dev/xvda bs=%d count=1 2>/dev/null", len(blockPattern))
		if got := strings.TrimSpace(crictl(t, ctx, "exec", "--sync", id, "sh", "-c", read)); got != blockPattern {
			t.Errorf("container read %q from /dev/xvda, want %q", got, blockPattern)
		}
		// The container can write it (permissions rwm).
		crictl(t, ctx, "exec", "--sync", id, "sh", "-c", "printf written | dd of=/dev/xvda bs=512 seek=8 conv=notrunc 2>/dev/null && sync")

		crictl(t, ctx, "stop", "--timeout", "0", id)
		crictl(t, ctx, "rm", id)
		if handler != harness.Runc {
			// Detached: nothing holds the loop device any more.
			qemu := sandboxPid(t, ctx, pod.ID)
			fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", qemu))
			for _, fd := range fds {
				if target, _ := os.Readlink(fd); target == dev {
					t.Errorf("QEMU (pid %d) still has %s open after the container was removed", qemu, dev)
				}
			}
		}
		out, err := exec.Command("dd", "if="+dev, "bs=512", "skip=8", "count=1", "status=none").Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(out), "written") {
			t.Errorf("the host's device holds %q at block 8, want what the container wrote", out[:16])
		}
	})
}
