package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Close removes every pod, stops containerd, kills whatever it left running
// (shims, container processes, VMs), unmounts everything under Dir, removes
// the network namespace, the cgroups it made (a cluster's cgroupRoot tree
// included) and deletes Dir. It is safe on a half-started Env.
func (e *Env) Close() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := len(e.beforeClose) - 1; i >= 0; i-- {
		if err := e.beforeClose[i](); err != nil {
			errs = append(errs, err)
		}
	}
	e.beforeClose = nil
	if e.daemon != nil {
		// The polite way first: CRI stops and removes pods and their shims.
		if _, err := e.Run(ctx, e.Crictl(ctx, "rmp", "--all", "--force")); err != nil {
			e.log.Warn("removing pods on close", "err", err)
		}
		e.stopDaemon()
	}
	if err := killUnder(e.Dir, os.Getpid()); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(e.Dir, e.netnsPath()); err != nil {
		errs = append(errs, err)
	}
	if e.stopSnapshotter != nil {
		if err := e.stopSnapshotter(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the snapshotter: %w", err))
		}
	}
	if e.Registry != nil {
		e.Registry.Close()
	}
	if e.registryLog != nil {
		e.registryLog.Close()
	}
	if e.NetNS != nil {
		if err := e.NetNS.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(e.Dir, ""); err != nil {
		errs = append(errs, err)
	}
	e.removeNamespaceCgroups()
	if e.kubeCgroup != "" {
		// After the kubelet (beforeClose), the pods and containerd: the
		// kubepods tree is empty but for what a pod leaked.
		killed, err := removeCgroupTree(e.kubeCgroup)
		if len(killed) > 0 {
			e.log.Warn("killed processes left in the cluster's cgroups", "cgroup", e.kubeCgroup, "pids", killed)
		}
		if err != nil {
			errs = append(errs, err)
		}
		e.kubeCgroup = ""
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", e.Dir, err))
	}
	return errors.Join(errs...)
}

func (e *Env) netnsPath() string {
	if e.NetNS == nil {
		return ""
	}
	return e.NetNS.Path
}

// stopDaemon sends containerd SIGTERM, and SIGKILL after ten seconds.
func (e *Env) stopDaemon() {
	_ = e.daemon.Process.Signal(syscall.SIGTERM)
	// Stopping: containerd's exit status (signalled or killed) says nothing.
	select {
	case <-e.daemonDone: //nolint:errcheck // see above
	case <-time.After(10 * time.Second):
		_ = e.daemon.Process.Kill()
		<-e.daemonDone //nolint:errcheck // see above
	}
	e.daemon = nil
}

// Leftovers lists what a removed pod may have left behind: processes other
// than containerd that reference Dir (shims, container processes, VMs) and
// mounts under Dir other than the netns pin. An empty list means clean.
func (e *Env) Leftovers() ([]string, error) {
	skip := map[int]bool{os.Getpid(): true}
	if e.daemon != nil {
		skip[e.daemon.Process.Pid] = true
	}
	procs, err := processesUnder(e.Dir, skip)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range procs {
		out = append(out, fmt.Sprintf("process %d: %s", p.pid, p.what))
	}
	mounts, err := mountsUnder(e.Dir)
	if err != nil {
		return nil, err
	}
	for _, m := range mounts {
		if m != e.netnsPath() {
			out = append(out, "mount "+m)
		}
	}
	netns, _ := filepath.Glob(filepath.Join(e.Dir, "state", "*", "netns", "*"))
	for _, n := range netns {
		out = append(out, "netns file "+n)
	}
	e.mu.Lock()
	ids := append([]string(nil), e.ids...)
	e.mu.Unlock()
	for _, id := range ids {
		cgs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", "*", id))
		for _, cg := range cgs {
			out = append(out, "cgroup "+cg)
		}
	}
	return out, nil
}

// track remembers a pod or container ID for Leftovers.
func (e *Env) track(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ids = append(e.ids, id)
}

// namespaceCgroups lists the per-hierarchy parent cgroups containerd
// creates for containers without a cgroup parent: one per containerd
// namespace, "/k8s.io" for CRI and "/veil-e2e" for the harness's ctr.
func namespaceCgroups() map[string]bool {
	out := map[string]bool{}
	for _, ns := range []string{"k8s.io", Namespace} {
		found, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
		for _, f := range found {
			out[f] = true
		}
	}
	return out
}

// nsCgroups tracks the namespace cgroups across this process's open
// environments, which share them (every containerd puts its CRI pods
// under /k8s.io): they are removed when the last environment closes, and
// only those that did not exist when the first one started. An
// environment that removed them while another's containerd was creating a
// container below would race it.
var nsCgroups struct {
	sync.Mutex
	live   int
	before map[string]bool
}

// holdNamespaceCgroups counts e in nsCgroups (Start).
func (e *Env) holdNamespaceCgroups() {
	nsCgroups.Lock()
	defer nsCgroups.Unlock()
	if nsCgroups.live == 0 {
		nsCgroups.before = namespaceCgroups()
	}
	nsCgroups.live++
	e.holdsNamespaceCgroups = true
}

// removeNamespaceCgroups releases e's count in nsCgroups (Close; once)
// and, when it was the last open environment, removes the namespace
// cgroups the environments created; rmdir leaves any still in use.
func (e *Env) removeNamespaceCgroups() {
	nsCgroups.Lock()
	defer nsCgroups.Unlock()
	if !e.holdsNamespaceCgroups {
		return
	}
	e.holdsNamespaceCgroups = false
	nsCgroups.live--
	if nsCgroups.live > 0 {
		return
	}
	for cg := range namespaceCgroups() {
		if !nsCgroups.before[cg] {
			_ = unix.Rmdir(cg)
		}
	}
}

type proc struct {
	pid  int
	what string
}

// processesUnder finds processes whose command line, working directory or
// root directory is under dir.
func processesUnder(dir string, skip map[int]bool) ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var out []proc
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || skip[pid] {
			continue
		}
		base := filepath.Join("/proc", ent.Name())
		cmdline, err := os.ReadFile(filepath.Join(base, "cmdline"))
		if err != nil {
			continue // gone
		}
		cmd := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if within(cmd, dir) {
			out = append(out, proc{pid, cmd})
			continue
		}
		for _, link := range []string{"cwd", "root"} {
			if target, err := os.Readlink(filepath.Join(base, link)); err == nil && within(target, dir) {
				out = append(out, proc{pid, link + " " + target + ": " + cmd})
				break
			}
		}
	}
	return out, nil
}

// within reports whether s mentions dir as a path (dir itself or below it).
func within(s, dir string) bool {
	for rest := s; ; {
		i := strings.Index(rest, dir)
		if i < 0 {
			return false
		}
		rest = rest[i+len(dir):]
		if rest == "" || rest[0] == '/' || rest[0] == ' ' {
			return true
		}
	}
}

// killUnder SIGKILLs every process found by processesUnder until none is
// left (or a deadline passes), then removes the cgroups they were in.
func killUnder(dir string, self int) error {
	cgroups := map[string]bool{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		procs, err := processesUnder(dir, map[int]bool{self: true})
		if err != nil {
			return err
		}
		if len(procs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("killing leftover processes: %d still alive, first %d: %s", len(procs), procs[0].pid, procs[0].what)
		}
		for _, p := range procs {
			for _, cg := range processCgroups(p.pid) {
				cgroups[cg] = true
			}
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // poll interval while the kernel reaps
	}
	removeCgroups(cgroups)
	return nil
}

// processCgroups returns the cgroup directories (v1 and v2) of pid, except
// the roots.
func processCgroups(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] == "/" {
			continue
		}
		switch ctrl := strings.TrimPrefix(parts[1], "name="); {
		case parts[1] == "":
			out = append(out, filepath.Join("/sys/fs/cgroup/unified", parts[2]))
		default:
			for _, c := range strings.Split(ctrl, ",") {
				out = append(out, filepath.Join("/sys/fs/cgroup", c, parts[2]))
			}
		}
	}
	return out
}

// removeCgroups removes leaf cgroup directories, deepest first; directories
// still in use or shared with the host stay.
func removeCgroups(set map[string]bool) {
	var dirs []string
	for d := range set {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		_ = unix.Rmdir(d)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mounts: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount under dir except keep, repeating while
// unmounting reveals more (stacked mounts).
func unmountUnder(dir, keep string) error {
	for range 10 {
		mounts, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		var todo []string
		for _, m := range mounts {
			if m != keep {
				todo = append(todo, m)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		for _, m := range todo {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmounting %s: %w", m, err)
			}
		}
	}
	return fmt.Errorf("unmounting under %s: mounts keep reappearing", dir)
}

// ownerFile, in an environment's directory, holds the PID of the process
// that created it.
const ownerFile = "owner.pid"

// sweepStale removes environments left behind by test processes that died
// without closing them (killed, or go test's timeout): each directory
// veil-e2e-* in the temp dir whose owner process is gone. Environments of
// live processes, and directories without an owner file, are left alone.
func sweepStale(log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "veil-e2e-*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		log.Warn("removing a stale environment", "dir", dir, "owner", pid)
		var errs []error
		errs = append(errs, killUnder(dir, os.Getpid()), unmountUnder(dir, ""))
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			log.Warn("removing a stale environment", "dir", dir, "err", err)
		}
	}
}

// veilStateRoot is where veil shims keep pod state (shim.DefaultStateRoot);
// the mounts of a pod's rootfs and volumes live under it, outside any
// environment's directory.
const veilStateRoot = "/run/veil"

// sweepVeilState removes the pod state directories under root
// (<root>/<namespace>/<sandbox>) that no running shim or VM owns: what
// shims killed with their test process left (their bind mounts would
// otherwise stay until reboot). A directory is owned while a process's
// command line names it (QEMU's does) or a veil shim runs with its sandbox
// ID.
func sweepVeilState(log *slog.Logger, root string) {
	dirs, _ := filepath.Glob(filepath.Join(root, "*", "*"))
	if len(dirs) == 0 {
		return
	}
	cmdlines := map[int]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		cmdlines[pid] = "\x00" + string(b)
	}
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		if ownedState(dir, cmdlines) {
			continue
		}
		log.Warn("removing a dead pod's veil state", "dir", dir)
		err := unmountUnder(dir, "")
		if err == nil {
			err = os.RemoveAll(dir)
		}
		if err != nil {
			log.Warn("removing a dead pod's veil state", "dir", dir, "err", err)
		}
		_ = os.Remove(filepath.Dir(dir)) // the namespace's, once empty
	}
}

// ownedState reports whether a process (by its NUL-led, NUL-separated
// command line) owns the pod state directory dir.
func ownedState(dir string, cmdlines map[int]string) bool {
	id := "\x00-id\x00" + filepath.Base(dir) + "\x00"
	for _, c := range cmdlines {
		if strings.Contains(c, dir) || (strings.Contains(c, "containerd-shim-veil") && strings.Contains(c+"\x00", id)) {
			return true
		}
	}
	return false
}

// processAlive reports whether pid names a running process.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
