package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// containerControllers are the controllers containers get when the kernel has them.
var containerControllers = []string{"cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc"}

// SubtreeControl returns what to write to the root cgroup's
// cgroup.subtree_control given its cgroup.controllers: every wanted
// controller the kernel offers.
func SubtreeControl(available string) string {
	have := map[string]bool{}
	for _, c := range strings.Fields(available) {
		have[c] = true
	}
	var on []string
	for _, c := range containerControllers {
		if have[c] {
			on = append(on, "+"+c)
		}
	}
	return strings.Join(on, " ")
}

// EnableControllers delegates the available controllers to child cgroups of root.
func EnableControllers(root string) error {
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading cgroup controllers: %w", err)
	}
	line := SubtreeControl(string(avail))
	if line == "" {
		return nil
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte(line), 0o644); err != nil {
		return fmt.Errorf("enabling cgroup controllers %q: %w", line, err)
	}
	return nil
}

// ContainersCgroup is the parent cgroup of every container (/veil/<id>).
const ContainersCgroup = "veil"

// PrepareCgroups delegates controllers from the root cgroup and creates the
// containers' parent cgroup with them delegated too. Creating the first
// non-root memory cgroup at boot, while nothing else runs, also flips the
// kernel's memcg static keys once, before containers start: under QEMU TCG
// the live code patching of such a flip can crash a vCPU that runs the
// patched code at that moment.
func PrepareCgroups(root string) error {
	if err := EnableControllers(root); err != nil {
		return err
	}
	dir := filepath.Join(root, ContainersCgroup)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating cgroup %s: %w", dir, err)
	}
	return EnableControllers(dir)
}

// HoldDeviceFilterKey attaches an allow-all device program to the
// containers' parent cgroup and leaves it there. Attaching the first
// cgroup device program (runc does, for every container) and detaching the
// last flip a kernel static key; with one program always attached the key
// never flips while containers start and stop, which avoids the TCG code
// patching crash described at PrepareCgroups. Containers' own device rules
// still apply: programs attached with BPF_F_ALLOW_MULTI must all allow.
func HoldDeviceFilterKey(root string) error {
	dir := filepath.Join(root, ContainersCgroup)
	insts, license, err := cgroup2.DeviceFilter(allowAllDevices())
	if err != nil {
		return fmt.Errorf("building the allow-all device filter: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if _, err := cgroup2.LoadAttachCgroupDeviceFilter(insts, license, fd); err != nil {
		return fmt.Errorf("attaching the allow-all device filter to %s: %w", dir, err)
	}
	return nil
}

// allowAllDevices is the device rule list of the always-attached filter.
// DeviceFilter needs every field: type "a" and major, minor -1 (any).
func allowAllDevices() []specs.LinuxDeviceCgroup {
	wildcard := int64(-1)
	return []specs.LinuxDeviceCgroup{{Allow: true, Type: "a", Major: &wildcard, Minor: &wildcard, Access: "rwm"}}
}
