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
