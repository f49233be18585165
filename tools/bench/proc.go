package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/tools/bench/report"
	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// podProcs is a pod's shim (containerd-shim-*, started with `-id
// <sandbox-id>`) and all its descendants, the shim first.
func podProcs(sandboxID string) ([]procfs.Proc, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	children := map[int][]procfs.Proc{}
	shimPID := 0
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		children[st.PPID] = append(children[st.PPID], p)
		args, err := p.CmdLine()
		if err != nil || len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		if i := slices.Index(args, "-id"); i >= 0 && i+1 < len(args) && args[i+1] == sandboxID {
			shimPID = p.PID
		}
	}
	if shimPID == 0 {
		return nil, fmt.Errorf("no shim process with -id %s", sandboxID)
	}
	shim, err := procfs.NewProc(shimPID)
	if err != nil {
		return nil, err
	}
	out := []procfs.Proc{shim}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i].PID]...)
	}
	return out, nil
}

// cpuSeconds is the CPU time (user and system, every thread) the
// processes have used so far; one that has exited counts 0.
func cpuSeconds(procs []procfs.Proc) float64 {
	var sum float64
	for _, p := range procs {
		if st, err := p.Stat(); err == nil {
			sum += st.CPUTime()
		}
	}
	return sum
}

// podPSS sums the PSS (and RSS) of a pod's shim (containerd-shim-*, started with
// `-id <sandbox-id>`) and all its descendants: QEMU for veil, the pause
// and container processes for runc. by is the same split by executable;
// qemus are the QEMU processes among them. The same walk for both
// handlers, so the figures compare.
func podPSS(sandboxID string) (total, rss uint64, by map[string]uint64, qemus []int, err error) {
	procs, err := podProcs(sandboxID)
	if err != nil {
		return 0, 0, nil, nil, err
	}
	by = map[string]uint64{}
	for _, p := range procs {
		r, err := p.ProcSMapsRollup()
		if err != nil {
			return 0, 0, nil, nil, fmt.Errorf("reading smaps_rollup of pid %d: %w", p.PID, err)
		}
		// By executable: QEMU's process title names the pod.
		name, err := p.Executable()
		if err != nil {
			name, _ = p.Comm()
		}
		total += r.Pss
		rss += r.Rss
		by[filepath.Base(name)] += r.Pss
		if strings.HasPrefix(filepath.Base(name), "qemu-system") {
			qemus = append(qemus, p.PID)
		}
	}
	return total, rss, by, qemus, nil
}

// describeMachine records what the run ran on.
func describeMachine(ctx context.Context, env *harness.Env) report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.Hostname, _ = os.Hostname()
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		m.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			m.MemTotalMB = *mi.MemTotal / 1024
		}
	}
	firstLine := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).Output()
		if err != nil {
			return ""
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	m.QEMU = firstLine("qemu-system-x86_64", "--version")
	m.Containerd = firstLine(env.Bin("containerd"), "--version")
	if out, err := exec.CommandContext(ctx, "git", "-C", env.RepoRoot, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

// hostBusyCPU is the CPU time every CPU of the host has spent busy since
// boot (/proc/stat: all but idle and iowait), seconds.
func hostBusyCPU() (float64, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	st, err := fs.Stat()
	if err != nil {
		return 0, fmt.Errorf("reading /proc/stat: %w", err)
	}
	c := st.CPUTotal
	return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal, nil
}
