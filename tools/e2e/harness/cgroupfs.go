package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kubeCgroupPrefix starts the name of the cgroup a cluster's kubelet gets
// as its cgroupRoot: /veil-e2e-k8s-<owner pid>-<environment suffix>, one
// top-level cgroup in every mounted hierarchy, so that the kubelet's
// kubepods tree (QoS classes, pod<uid>) stays apart from the host's and
// from other environments', and a killed run's tree can be told by its
// owner's PID (sweepStaleCgroups).
const kubeCgroupPrefix = "veil-e2e-k8s-"

// kubeCgroupName is the cgroupRoot of the cluster of the environment in
// dir, owned by process owner.
func kubeCgroupName(owner int, dir string) string {
	return fmt.Sprintf("/%s%d-%s", kubeCgroupPrefix, owner, strings.TrimPrefix(filepath.Base(dir), "veil-e2e-"))
}

// kubeCgroupOwner returns the owner PID in a cgroupRoot's base name
// (kubeCgroupName), or false when name is not one.
func kubeCgroupOwner(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, kubeCgroupPrefix)
	if !ok {
		return 0, false
	}
	pidStr, suffix, ok := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if !ok || suffix == "" || err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// isKubeCgroup reports whether name is a cluster's cgroupRoot
// (kubeCgroupName): one component below the hierarchies' roots, so that
// creating and removing it can never touch a cgroup of the host's.
func isKubeCgroup(name string) bool {
	base, ok := strings.CutPrefix(name, "/")
	_, owned := kubeCgroupOwner(base)
	return ok && owned && !strings.Contains(base, "/") && base != "." && base != ".."
}

// cgroupMount is one mounted cgroup hierarchy.
type cgroupMount struct {
	Dir string // its mount point
	V2  bool   // the unified (cgroup2) hierarchy
	// Controllers are a v1 hierarchy's controllers and name= options
	// (cpu, cpuacct, name=systemd); none for v2.
	Controllers []string
}

// hostCgroupMounts lists the host's cgroup hierarchies from
// /proc/self/mountinfo.
func hostCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	return parseCgroupMounts(f)
}

// parseCgroupMounts reads mountinfo and returns each cgroup hierarchy
// once (the first mount point of each; bind mounts of the same one are
// skipped), in mountinfo's order.
func parseCgroupMounts(r io.Reader) ([]cgroupMount, error) {
	var out []cgroupMount
	seen := map[string]bool{} // by device (major:minor)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		if seen[fields[2]] {
			continue
		}
		seen[fields[2]] = true
		m := cgroupMount{Dir: unescapeMount(fields[4]), V2: fstype == "cgroup2"}
		if !m.V2 && sep+3 < len(fields) {
			for _, o := range strings.Split(fields[sep+3], ",") {
				if strings.HasPrefix(o, "name=") || !strings.Contains(o, "=") && !cgroupV1Options[o] {
					m.Controllers = append(m.Controllers, o)
				}
			}
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	return out, nil
}

// cgroupV1Options are cgroup v1 super options that are not controllers
// (those with a value, release_agent=, are told apart by their "=").
var cgroupV1Options = map[string]bool{"": true, "rw": true, "ro": true, "xattr": true, "noprefix": true,
	"none": true, "clone_children": true, "cpuset_v2_mode": true, "favordynmods": true}

// hierarchyFor returns the hierarchy among mounts that holds controller: its
// v1 hierarchy, or else the unified one (a cgroup v2 host).
func hierarchyFor(mounts []cgroupMount, controller string) (cgroupMount, error) {
	var unified *cgroupMount
	for i, m := range mounts {
		if m.V2 {
			unified = &mounts[i]
			continue
		}
		for _, c := range m.Controllers {
			if c == controller {
				return m, nil
			}
		}
	}
	if unified != nil {
		return *unified, nil
	}
	return cgroupMount{}, fmt.Errorf("finding the cgroup hierarchy of controller %s: none is mounted", controller)
}

// CgroupDir returns the directory of cgroup p (a cgroupfs path such as
// /veil-e2e-k8s-1-2/kubepods) in the hierarchy holding controller: its v1
// hierarchy, or the unified one on a cgroup v2 host (v2 true).
func CgroupDir(controller, p string) (dir string, v2 bool, err error) {
	mounts, err := hostCgroupMounts()
	if err != nil {
		return "", false, err
	}
	m, err := hierarchyFor(mounts, controller)
	if err != nil {
		return "", false, err
	}
	return filepath.Join(m.Dir, filepath.Clean("/"+p)), m.V2, nil
}

// ProcessCgroup returns process pid's cgroup (a cgroupfs path) in the
// hierarchy holding controller: its v1 hierarchy, or the unified one on a
// cgroup v2 host.
func ProcessCgroup(pid int, controller string) (string, error) {
	mounts, err := hostCgroupMounts()
	if err != nil {
		return "", err
	}
	m, err := hierarchyFor(mounts, controller)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("reading the cgroups of process %d: %w", pid, err)
	}
	p, ok := cgroupOf(string(data), controller, m.V2)
	if !ok {
		return "", fmt.Errorf("reading the cgroups of process %d: no line for %s in %q", pid, controller, data)
	}
	return p, nil
}

// cgroupOf picks, from /proc/PID/cgroup's content, the path in the v1
// hierarchy holding controller, or the unified hierarchy's ("0::PATH")
// when v2.
func cgroupOf(procCgroup, controller string, v2 bool) (string, bool) {
	for _, line := range strings.Split(strings.TrimSpace(procCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if v2 {
			if parts[0] == "0" && parts[1] == "" {
				return parts[2], true
			}
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2], true
			}
		}
	}
	return "", false
}

// makeCgroupRoot creates cgroup name, a top-level cgroupfs path
// (kubeCgroupName), in every mounted hierarchy: the kubelet refuses a
// cgroupRoot missing from any hierarchy it knows (cpu, cpuacct, cpuset,
// memory, pids, name=systemd), and the unified one of a hybrid host is
// created too so that everything below it is found and removed the same
// way. A v1 cpuset cgroup gets its parent's cpus and mems (a new one has
// none, and no task could join below it). On a cgroup v2 host the
// controllers its parent grants it are enabled for its children (the
// kubelet's kubepods below it needs cpu, memory and pids).
func makeCgroupRoot(name string) error {
	if !isKubeCgroup(name) {
		return fmt.Errorf("creating cgroup %q: not a top-level /%s<pid>-<suffix> cgroup", name, kubeCgroupPrefix)
	}
	mounts, err := hostCgroupMounts()
	if err != nil {
		return err
	}
	if len(mounts) == 0 {
		return errors.New("creating the cluster's cgroup root: no cgroup filesystem is mounted")
	}
	for _, m := range mounts {
		dir := filepath.Join(m.Dir, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		if m.V2 {
			ctrls, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
			if err != nil {
				return fmt.Errorf("reading the controllers of cgroup %s: %w", dir, err)
			}
			var enable []string
			for _, c := range strings.Fields(string(ctrls)) {
				enable = append(enable, "+"+c)
			}
			if len(enable) == 0 {
				continue // a hybrid host's unified hierarchy: no controllers
			}
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644); err != nil {
				return fmt.Errorf("enabling controllers %v below cgroup %s: %w", enable, dir, err)
			}
			continue
		}
		for _, c := range m.Controllers {
			if c != "cpuset" {
				continue
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(m.Dir, f))
				if err != nil {
					return fmt.Errorf("reading %s of the root cpuset cgroup: %w", f, err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("writing %s of cgroup %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// removeCgroupTree removes cgroup name (makeCgroupRoot's) and everything
// below it from every mounted hierarchy, children first. Processes still in
// the tree (only the cluster's pods can be: Close has stopped the kubelet
// and containerd by then) are SIGKILLed first and returned; a cgroup that
// stays busy for 15 seconds is an error naming it.
func removeCgroupTree(name string) (killed []int, err error) {
	if !isKubeCgroup(name) {
		return nil, fmt.Errorf("removing cgroup %q: not a top-level /%s<pid>-<suffix> cgroup", name, kubeCgroupPrefix)
	}
	mounts, err := hostCgroupMounts()
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range mounts {
		roots = append(roots, filepath.Join(m.Dir, name))
	}
	k, err := removeTrees(roots, 15*time.Second)
	return k, err
}

// removeTrees removes the directory trees roots (cgroup directories: each
// holds only control files and child directories), children first,
// SIGKILLing the processes listed in their cgroup.procs, until every one is
// gone or timeout passes.
func removeTrees(roots []string, timeout time.Duration) (killed []int, err error) {
	self := os.Getpid()
	seen := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		var dirs []string
		for _, root := range roots {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil // a missing root, or a child removed meanwhile
			})
		}
		if len(dirs) == 0 {
			return killed, nil
		}
		for _, d := range dirs {
			data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 && pid != self {
					if !seen[pid] {
						seen[pid] = true
						killed = append(killed, pid)
					}
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
		var errs []error
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, errors.Join(errs...)
		}
		time.Sleep(100 * time.Millisecond) // poll interval while the killed processes exit
	}
}

// sweepStaleCgroups removes the cgroup trees of clusters whose test process
// is gone (killed, or go test's timeout): every top-level
// veil-e2e-k8s-<pid>-* cgroup in any hierarchy whose pid is not running.
// Those of live processes (another checkout's run) are left alone.
func sweepStaleCgroups(log *slog.Logger) {
	mounts, err := hostCgroupMounts()
	if err != nil {
		log.Warn("sweeping stale cgroups", "err", err)
		return
	}
	names := map[string]bool{}
	for _, m := range mounts {
		found, _ := filepath.Glob(filepath.Join(m.Dir, kubeCgroupPrefix+"*"))
		for _, f := range found {
			names[filepath.Base(f)] = true
		}
	}
	for name := range names {
		pid, ok := kubeCgroupOwner(name)
		if !ok || processAlive(pid) {
			continue
		}
		log.Warn("removing a stale cluster's cgroups", "cgroup", "/"+name, "owner", pid)
		killed, err := removeCgroupTree("/" + name)
		if len(killed) > 0 {
			log.Warn("killed processes left in a stale cluster's cgroups", "cgroup", "/"+name, "pids", killed)
		}
		if err != nil {
			log.Warn("removing a stale cluster's cgroups", "cgroup", "/"+name, "err", err)
		}
	}
}
