package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseCgroupMounts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mountinfo string
		want      []cgroupMount
	}{
		{"hybrid (this machine)", `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`, []cgroupMount{
			{Dir: "/sys/fs/cgroup/cpu", Controllers: []string{"cpu"}},
			{Dir: "/sys/fs/cgroup/cpuset", Controllers: []string{"cpuset"}},
			{Dir: "/sys/fs/cgroup/memory", Controllers: []string{"memory"}},
			{Dir: "/sys/fs/cgroup/systemd", Controllers: []string{"name=systemd"}},
			{Dir: "/sys/fs/cgroup/unified", V2: true},
		}},
		{"unified, with optional fields", `35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`, []cgroupMount{{Dir: "/sys/fs/cgroup", V2: true}}},
		{"co-mounted, bound twice", `31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
90 22 0:28 / /mnt/cg\040x rw - cgroup cgroup rw,cpu,cpuacct
`, []cgroupMount{{Dir: "/sys/fs/cgroup/cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}}}},
		{"no cgroups, a short line", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCgroupMounts(strings.NewReader(tc.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseCgroupMounts = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHierarchyForAndCgroupOf(t *testing.T) {
	hybrid := []cgroupMount{
		{Dir: "/sys/fs/cgroup/cpu,cpuacct", Controllers: []string{"cpu", "cpuacct"}},
		{Dir: "/sys/fs/cgroup/memory", Controllers: []string{"memory"}},
		{Dir: "/sys/fs/cgroup/unified", V2: true},
	}
	unified := []cgroupMount{{Dir: "/sys/fs/cgroup", V2: true}}
	procCgroup := "9:name=systemd:/\n4:memory:/r/kubepods/burstable/podU/sb\n2:cpu,cpuacct:/r/kubepods/burstable/podU/sb\n0::/user.slice\n"
	for _, tc := range []struct {
		mounts     []cgroupMount
		controller string
		wantDir    string
		wantPath   string
	}{
		{hybrid, "memory", "/sys/fs/cgroup/memory", "/r/kubepods/burstable/podU/sb"},
		{hybrid, "cpu", "/sys/fs/cgroup/cpu,cpuacct", "/r/kubepods/burstable/podU/sb"},
		{unified, "memory", "/sys/fs/cgroup", "/user.slice"},
	} {
		m, err := hierarchyFor(tc.mounts, tc.controller)
		if err != nil || m.Dir != tc.wantDir {
			t.Errorf("hierarchyFor(%s) = %+v, %v; want %s", tc.controller, m, err, tc.wantDir)
		}
		if p, ok := cgroupOf(procCgroup, tc.controller, m.V2); !ok || p != tc.wantPath {
			t.Errorf("cgroupOf(%s, v2 %v) = %q, %v; want %q", tc.controller, m.V2, p, ok, tc.wantPath)
		}
	}
	if _, err := hierarchyFor(hybrid[:1], "memory"); err == nil {
		t.Error("hierarchyFor(memory) with no memory hierarchy and no unified one: no error")
	}
	if p, ok := cgroupOf("4:memory:/a\n", "pids", false); ok {
		t.Errorf("cgroupOf(pids) without a pids line = %q, true", p)
	}
}

func TestKubeCgroupName(t *testing.T) {
	name := kubeCgroupName(4242, "/tmp/veil-e2e-98765")
	if name != "/veil-e2e-k8s-4242-98765" {
		t.Fatalf("kubeCgroupName = %q", name)
	}
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{name[1:], 4242, true},
		{"veil-e2e-k8s-17-x", 17, true},
		{"veil-e2e", 0, false},                   // containerd's namespace cgroup
		{"veil-e2e-k8s-17", 0, false},            // no suffix
		{"veil-e2e-k8s-17-", 0, false},           // empty suffix
		{"veil-e2e-k8s-x-1", 0, false},           // no pid
		{"veil-e2e-k8s-0-1", 0, false},           // pid 0 is everyone's group
		{"veil-e2e-k8s--1-1", 0, false},          // negative
		{"kubepods", 0, false},                   // the host's
		{"other-veil-e2e-k8s-17-x", 0, false},    // prefix elsewhere
		{"veil-e2e-k8s-17-x/kubepods", 17, true}, // only base names are passed; makeCgroupRoot checks depth
	} {
		pid, ok := kubeCgroupOwner(tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("kubeCgroupOwner(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
	for _, bad := range []string{"/", "", "/kubepods", "/veil-e2e-k8s-1-2/kubepods", "/veil-e2e-k8s-1-2/../x", "veil-e2e-k8s-1-2"} {
		if _, err := removeCgroupTree(bad); err == nil {
			t.Errorf("removeCgroupTree(%q): no error, want a refusal", bad)
		}
		if err := makeCgroupRoot(bad); err == nil {
			t.Errorf("makeCgroupRoot(%q): no error, want a refusal", bad)
		}
	}
}

// removeTrees removes nested directories children first, across roots, and
// a missing root is no error.
func TestRemoveTrees(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a"), filepath.Join(base, "b")
	for _, d := range []string{"a/kubepods/burstable/podX/sb", "a/kubepods/besteffort", "b/kubepods/podY"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	killed, err := removeTrees([]string{a, b, filepath.Join(base, "missing")}, time.Second)
	if err != nil || len(killed) != 0 {
		t.Fatalf("removeTrees = %v, %v; want nothing killed, no error", killed, err)
	}
	if ents, _ := os.ReadDir(base); len(ents) != 0 {
		t.Errorf("left after removeTrees: %v", ents)
	}
}

// A process listed in a tree's cgroup.procs is killed; a directory that
// cannot be removed is an error naming it once the timeout passes.
func TestRemoveTreesKillsAndReports(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "veil-e2e-k8s-1-1")
	if err := os.MkdirAll(filepath.Join(dir, "pod"), 0o755); err != nil {
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "300")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleep.Wait() }()
	t.Cleanup(func() { _ = sleep.Process.Kill() })
	// A regular file: rmdir fails with ENOTEMPTY, as a busy cgroup does
	// with EBUSY.
	procs := filepath.Join(dir, "pod", "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	killed, err := removeTrees([]string{dir}, 300*time.Millisecond)
	if len(killed) != 1 || killed[0] != sleep.Process.Pid {
		t.Errorf("removeTrees killed %v, want [%d]", killed, sleep.Process.Pid)
	}
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "pod")) {
		t.Errorf("removeTrees error = %v, want one naming %s", err, filepath.Join(dir, "pod"))
	}
	select {
	case werr := <-done:
		if ws, ok := sleep.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("sleep ended with %v, want SIGKILL", werr)
		}
	case <-time.After(10 * time.Second):
		t.Error("the process in cgroup.procs is still running")
	}
}
