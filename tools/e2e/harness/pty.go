package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunWithTTY runs cmd with a new pseudo-terminal as its controlling
// terminal and standard streams (what `crictl exec -it` needs) and returns
// everything written to the terminal.
func RunWithTTY(cmd *exec.Cmd) (string, error) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	defer ptmx.Close()
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return "", fmt.Errorf("unlocking the pseudo-terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		return "", fmt.Errorf("naming the pseudo-terminal: %w", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return "", fmt.Errorf("opening the pseudo-terminal's peer: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		tty.Close()
		return "", fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	tty.Close() // the child holds it; reads end with EIO once it exits
	var out bytes.Buffer
	_, rerr := io.Copy(&out, ptmx)
	werr := cmd.Wait()
	var pe *os.PathError
	if rerr != nil && !(errors.As(rerr, &pe) && errors.Is(pe.Err, unix.EIO)) {
		return out.String(), fmt.Errorf("reading the pseudo-terminal: %w", rerr)
	}
	if werr != nil {
		return out.String(), fmt.Errorf("running %v: %w: %s", cmd.Args, werr, out.String())
	}
	return out.String(), nil
}
