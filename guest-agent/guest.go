package agent

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/boot"
	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

// guest is the service.System of the real guest.
type guest struct {
	reaper *reaper.Reaper
	log    *slog.Logger
}

func (g *guest) Mount(p storage.Plan) error    { return storage.Mount(p) }
func (g *guest) Unmount(target string) error   { return storage.Unmount(target) }
func (g *guest) SetHostname(name string) error { return boot.SetHostname(name) }
func (g *guest) SetDNS(lines []string) error   { return boot.WriteResolvConf(lines) }

// SetSysctls writes the pod's sysctls in the agent's network and IPC
// namespaces: the VM's, which every container of the pod shares (the
// spec rewrite drops the network namespace and maps the pod's IPC
// namespace to the VM's).
func (g *guest) SetSysctls(sysctls map[string]string) error {
	return boot.SetSysctls(boot.ProcSys, sysctls)
}

// PauseCommand is the subcommand that holds the sandbox's PID namespace.
const PauseCommand = "pause"

// StartPIDNamespace re-executes the agent as PID 1 of a new PID namespace.
func (g *guest) StartPIDNamespace() (string, func(), error) {
	cmd := exec.Command("/proc/self/exe", PauseCommand)
	cmd.Args[0] = "veil-pause"
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	ec, err := g.reaper.Start(cmd)
	if err != nil {
		return "", nil, fmt.Errorf("starting the PID namespace holder: %w", err)
	}
	pid := cmd.Process.Pid
	path := "/proc/" + strconv.Itoa(pid) + "/ns/pid"
	g.log.Info("sandbox PID namespace", "holder", pid, "path", path)
	stop := func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		_, _ = g.reaper.Wait(cmd, ec)
	}
	return path, stop, nil
}

// IsPauseHolder reports whether args (and the environment) are those of
// the PID namespace holder StartPIDNamespace starts. The kernel starts
// /init with the host's command-line words as arguments, so "pause" there
// must not turn the guest's PID 1 into a holder: the holder inherits the
// agent's clean environment (boot.Env), which the kernel's init never has
// (the kernel always sets HOME and TERM).
func IsPauseHolder(args []string) bool {
	return len(args) == 2 && args[1] == PauseCommand && boot.EnvIsClean(os.Environ()) //nolint:gosec // G602: len(args) == 2 is checked first
}

// Pause is the PID namespace holder: PID 1 of the sandbox's PID namespace.
// It reaps the orphans of the namespace until SIGTERM.
func Pause() error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	for s := range sigs {
		if s != unix.SIGCHLD {
			return nil
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
		}
	}
	return nil
}
