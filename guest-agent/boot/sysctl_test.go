package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestSysctlPath(t *testing.T) {
	for _, tc := range []struct {
		name, want, err string
	}{
		{"kernel.shm_rmid_forced", "kernel/shm_rmid_forced", ""},
		{"kernel.msgmax", "kernel/msgmax", ""},
		{"kernel.sem", "kernel/sem", ""},
		{"fs.mqueue.msg_max", "fs/mqueue/msg_max", ""},
		{"net.ipv4.ip_unprivileged_port_start", "net/ipv4/ip_unprivileged_port_start", ""},
		{"net/ipv4/conf/eth0.100/forwarding", "net/ipv4/conf/eth0.100/forwarding", ""},
		// Not namespaced: the guest's own kernel settings.
		{"kernel.core_pattern", "", "not a namespaced sysctl"},
		{"kernel.semx", "", "not a namespaced sysctl"},
		{"vm.overcommit_memory", "", "not a namespaced sysctl"},
		{"kernel.hostname", "", "not a namespaced sysctl"},
		{"fs.mqueue", "", "not a namespaced sysctl"},
		// Paths out of /proc/sys.
		{"net/../../kernel/core_pattern", "", "not a sysctl name"},
		{"net..ipv4", "", "not a sysctl name"},
		{"net/ipv4/", "", "not a sysctl name"},
		{"/net/ipv4/ip_forward", "", "not a sysctl name"},
		{"", "", "not a sysctl name"},
		{"net.ipv4\x00", "", "not a sysctl name"},
	} {
		got, err := SysctlPath(tc.name)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("SysctlPath(%q) = %q, %v; want %q", tc.name, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.name)) {
			t.Errorf("SysctlPath(%q) = %q, %v; want an InvalidArgument naming it with %q", tc.name, got, err, tc.err)
		}
	}
}

func TestSetSysctls(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"kernel/shm_rmid_forced", "net/ipv4/ping_group_range"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, f), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := SetSysctls(root, map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 2147483647"}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"kernel/shm_rmid_forced": "1", "net/ipv4/ping_group_range": "0 2147483647"} {
		if b, _ := os.ReadFile(filepath.Join(root, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}

	// One refused name: nothing is written.
	err := SetSysctls(root, map[string]string{"kernel.shm_rmid_forced": "0", "kernel.core_pattern": "|/evil"})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "kernel.core_pattern") {
		t.Fatalf("SetSysctls with kernel.core_pattern: %v, want InvalidArgument naming it", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "kernel/shm_rmid_forced")); string(b) != "1" {
		t.Errorf("kernel/shm_rmid_forced = %q after a refused set, want it unchanged", b)
	}

	// A sysctl the kernel lacks.
	err = SetSysctls(root, map[string]string{"net.ipv4.no_such": "1"})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "net.ipv4.no_such") {
		t.Fatalf("SetSysctls with a missing sysctl: %v, want InvalidArgument naming it", err)
	}
}
