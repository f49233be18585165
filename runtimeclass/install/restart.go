package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
)

// Restarter restarts containerd so it rereads its config.
type Restarter interface {
	Restart(ctx context.Context) error
	String() string
}

// NoRestart leaves containerd alone (--restart=none); the admin restarts it.
type NoRestart struct{}

func (NoRestart) Restart(context.Context) error { return nil }
func (NoRestart) String() string                { return "not restarted (--restart=none)" }

// Systemd restarts a unit through systemd's D-Bus API and waits for the job.
type Systemd struct {
	Unit    string        // containerd.service
	Timeout time.Duration // for the restart job; 0 means 2 minutes
}

func (s Systemd) String() string { return "systemd unit " + s.Unit }

// Restart asks systemd to restart the unit and waits for the job's result.
func (s Systemd) Restart(ctx context.Context) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connecting to systemd over D-Bus: %w", err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, s.Unit, "replace", done); err != nil {
		return fmt.Errorf("restarting %s: %w", s.Unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("restarting %s: systemd job %s (journalctl -u %s)", s.Unit, result, s.Unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restarting %s: %w", s.Unit, ctx.Err())
	}
}

// Command restarts containerd by running a hook command through /bin/sh -c
// (--restart-command), for nodes without systemd: for example
// `rc-service containerd restart` or `supervisorctl restart containerd`.
type Command struct{ Shell string }

func (c Command) String() string { return "command " + c.Shell }

// Restart runs the command; its output goes into the error when it fails.
func (c Command) Restart(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", c.Shell).CombinedOutput()
	if err != nil {
		return fmt.Errorf("running restart command %q: %w: %s", c.Shell, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ChooseRestarter picks how to restart containerd: mode none, systemd or
// command (with cmd), or auto: systemd when the host runs it
// (hostRoot/run/systemd/system exists, as sd_booted checks), else cmd when
// given, else an error saying what to pass.
func ChooseRestarter(mode, cmd, unit, hostRoot string) (Restarter, error) {
	if unit == "" {
		unit = "containerd.service"
	}
	switch mode {
	case "none":
		return NoRestart{}, nil
	case "systemd":
		return Systemd{Unit: unit}, nil
	case "command":
		if cmd == "" {
			return nil, errors.New("--restart=command needs --restart-command")
		}
		return Command{Shell: cmd}, nil
	case "", "auto":
		if st, err := os.Stat(hostRoot + "/run/systemd/system"); err == nil && st.IsDir() {
			return Systemd{Unit: unit}, nil
		}
		if cmd != "" {
			return Command{Shell: cmd}, nil
		}
		return nil, errors.New("this host does not run systemd: give --restart-command (run with /bin/sh -c to restart containerd) or --restart=none and restart containerd yourself")
	}
	return nil, fmt.Errorf("--restart %q: want auto, systemd, command or none", mode)
}
