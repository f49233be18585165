package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ConsoleWait bounds how long Console waits for the console device.
const ConsoleWait = 10 * time.Second

// Console opens /dev/console for the agent's log and makes it the
// process's stdout and stderr, so a Go panic reaches it too. The console
// is hvc0, a port of the virtio-serial device, which the host announces
// while the kernel boots: /init can start before it exists (the kernel
// then says "unable to open an initial console" and starts /init with no
// stdin, stdout or stderr; the image's /dev/null stands in for them), so
// Console waits up to ConsoleWait for it.
func Console() (*os.File, error) {
	f, err := waitForDevice(func() (*os.File, error) {
		return os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0)
	}, ConsoleWait, 20*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("opening /dev/console: %w", err)
	}
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			return nil, fmt.Errorf("redirecting fd %d to /dev/console: %w", fd, err)
		}
	}
	return f, nil
}

// waitForDevice calls open until it succeeds, fails otherwise than with
// ENODEV (no driver has registered the device yet) or ENXIO (nothing
// behind it yet), or wait has passed, trying again every interval.
func waitForDevice(open func() (*os.File, error), wait, every time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		f, err := open()
		if err == nil || (!errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENXIO)) {
			return f, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waited %s for the device to appear: %w", wait, err)
		}
		time.Sleep(every)
	}
}

// SetHostname sets the guest's hostname.
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("setting hostname %q: %w", name, err)
	}
	return nil
}

// ResolvConf renders /etc/resolv.conf from resolv.conf lines.
func ResolvConf(lines []string) []byte {
	var b strings.Builder
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l != "" {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return []byte(b.String())
}

// WriteResolvConf replaces /etc/resolv.conf.
func WriteResolvConf(lines []string) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return fmt.Errorf("creating /etc: %w", err)
	}
	if err := os.WriteFile("/etc/resolv.conf", ResolvConf(lines), 0o644); err != nil {
		return fmt.Errorf("writing /etc/resolv.conf: %w", err)
	}
	return nil
}

// SinceBoot is the time since the kernel started (CLOCK_BOOTTIME).
func SinceBoot() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// SetSubreaper makes the agent the reaper of its orphaned descendants
// (implied for PID 1; needed when the agent runs as another pid).
func SetSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming child subreaper: %w", err)
	}
	return nil
}

// PowerOff syncs, unmounts what it can and powers the VM off. It returns
// only if the power-off itself failed.
func PowerOff(log *slog.Logger) error {
	unix.Sync()
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, m := range UnmountOrder(string(b)) {
			if err := unix.Unmount(m, 0); err != nil {
				_ = unix.Unmount(m, unix.MNT_DETACH)
				log.Debug("unmounting at shutdown", "path", m, "err", err)
			}
		}
	}
	unix.Sync()
	log.Info("powering off")
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("powering off: %w", err)
	}
	return nil
}
