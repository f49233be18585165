// Package console serves the guest's debug console: a root shell on the
// virtio-serial port "veil.console", which the host binds to a unix socket
// for `veil debug console <sandbox>`.
//
// Each host connection gets a fresh shell on a new pty (busybox sh, in the
// guest's own namespaces, so `nsenter` and runc reach the containers). When
// the shell exits the server writes ExitMarker so the client knows to
// return; when the host disconnects first the shell gets SIGHUP. The port
// exists only when the host asked for it (shim config `debug_console`), and
// the server asks Allowed before each session, so a confidential guest can
// refuse it whatever the host configured.
package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// PortName is the virtio-serial port of the debug console.
const PortName = wire.DebugConsolePortName

// ExitMarker is written to the host when the session's shell has exited.
const ExitMarker = "\r\n[veil: debug console shell exited]\r\n"

// hostPollInterval is how often a port with no host connected is checked:
// the port offers no wake-up for a host connecting.
const hostPollInterval = 100 * time.Millisecond

// Server runs shells on the console port.
type Server struct {
	// Port is the port's device (/dev/vportNpM).
	Port string
	// Shell is the command run per session, with Env.
	Shell []string
	Env   []string
	// Allowed is asked before each session; an error refuses it and is
	// shown to the host. Nil allows.
	Allowed func() error
	Log     *slog.Logger
}

// Serve runs sessions until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	fd, err := unix.Open(s.Port, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return fmt.Errorf("opening debug console port %s: %w", s.Port, err)
	}
	defer unix.Close(fd)
	for {
		up, err := waitHost(ctx, fd)
		if err != nil || !up {
			return err
		}
		s.session(ctx, fd)
	}
}

// waitHost waits for the host side to connect (false when ctx ended).
func waitHost(ctx context.Context, fd int) (bool, error) {
	for {
		hup, err := hungUp(fd, 0)
		if err != nil {
			return false, err
		}
		if !hup {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(hostPollInterval):
		}
	}
}

// hungUp polls the port for timeout ms and reports whether the host side
// is disconnected.
func hungUp(fd int, timeout int) (bool, error) {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		_, err := unix.Poll(fds, timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("polling debug console port: %w", err)
		}
		return fds[0].Revents&unix.POLLHUP != 0, nil
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// session serves one host connection.
func (s *Server) session(ctx context.Context, fd int) {
	if s.Allowed != nil {
		if err := s.Allowed(); err != nil {
			s.log().Warn("debug console refused", "err", err)
			writePort(fd, []byte("veil: debug console refused: "+err.Error()+ExitMarker))
			waitHangup(ctx, fd)
			return
		}
	}
	pty, slave, err := console.NewPty()
	if err != nil {
		writePort(fd, []byte("veil: debug console: "+err.Error()+ExitMarker))
		waitHangup(ctx, fd)
		return
	}
	defer pty.Close()
	_ = pty.Resize(console.WinSize{Height: 24, Width: 80})
	tty, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		writePort(fd, []byte("veil: debug console: "+err.Error()+ExitMarker))
		waitHangup(ctx, fd)
		return
	}
	cmd := exec.Command(s.Shell[0], s.Shell[1:]...)
	cmd.Env = s.Env
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	tty.Close()
	if err != nil {
		writePort(fd, []byte("veil: debug console: starting "+s.Shell[0]+": "+err.Error()+ExitMarker))
		waitHangup(ctx, fd)
		return
	}
	s.log().Info("debug console session started", "pid", cmd.Process.Pid)

	// Shell output to the host until the pty reports the shell gone (EIO).
	out := make(chan struct{})
	go func() {
		defer close(out)
		buf := make([]byte, 4096)
		for {
			n, err := pty.Read(buf)
			if n > 0 {
				writePort(fd, buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	// Host input to the shell until the host hangs up or the shell exits.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			hup, err := hungUp(fd, int(hostPollInterval/time.Millisecond))
			if err != nil || hup {
				// The host left: hang up the shell's session.
				_ = unix.Kill(-cmd.Process.Pid, unix.SIGHUP)
				_ = cmd.Process.Signal(unix.SIGHUP)
				return
			}
			n, err := unix.Read(fd, buf)
			if n > 0 {
				_, _ = pty.Write(buf[:n])
			}
			if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	werr := cmd.Wait()
	// What the shell left running in its session would keep the pty open.
	_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	<-out
	close(stop)
	wg.Wait()
	s.log().Info("debug console session ended", "status", werr)
	writePort(fd, []byte(ExitMarker))
}

// waitHangup waits for the host to disconnect (or ctx to end), dropping
// what it sends.
func waitHangup(ctx context.Context, fd int) {
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		hup, err := hungUp(fd, int(hostPollInterval/time.Millisecond))
		if err != nil || hup {
			return
		}
		_, _ = unix.Read(fd, buf)
	}
}

// writePort writes all of b to the non-blocking port, waiting for room;
// it gives up when the host has disconnected.
func writePort(fd int, b []byte) {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if n > 0 {
			b = b[n:]
			continue
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			_, _ = unix.Poll(fds, int(hostPollInterval/time.Millisecond))
			if fds[0].Revents&unix.POLLHUP != 0 {
				return
			}
			continue
		}
		return
	}
}

// DetachKey (Ctrl-]) typed on the host ends Attach; the caller then closes
// the connection, and the guest hangs up the shell (SIGHUP).
const DetachKey = 0x1d

// Attach runs a host side of a session on conn (the debug console socket):
// in goes to the guest shell, its output to out, until the shell exits
// (ExitMarker, returns nil), DetachKey is read from in (returns nil), or
// conn fails. The end of in does not end the session: the shell's answers
// to the last lines are still read.
func Attach(conn io.ReadWriter, in io.Reader, out io.Writer) error {
	detached := make(chan struct{})
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := in.Read(buf)
			if i := bytes.IndexByte(buf[:n], DetachKey); i >= 0 {
				_, _ = conn.Write(buf[:i])
				close(detached)
				return
			}
			if n > 0 {
				if _, werr := conn.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	type chunk struct {
		b   []byte
		err error
	}
	chunks := make(chan chunk)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := conn.Read(buf)
			select {
			case chunks <- chunk{buf[:n], err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var tail []byte
	for {
		select {
		case <-detached:
			return nil
		case c := <-chunks:
			if len(c.b) > 0 {
				if _, err := out.Write(c.b); err != nil {
					return err
				}
				tail = append(tail, c.b...)
				if bytes.Contains(tail, []byte(ExitMarker)) {
					return nil
				}
				if len(tail) > len(ExitMarker) {
					tail = tail[len(tail)-len(ExitMarker):]
				}
			}
			if c.err != nil {
				if errors.Is(c.err, io.EOF) {
					return fmt.Errorf("debug console closed before the shell exited")
				}
				return fmt.Errorf("debug console: %w", c.err)
			}
		}
	}
}
