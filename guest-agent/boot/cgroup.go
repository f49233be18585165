package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
