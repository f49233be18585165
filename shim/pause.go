package shim

import (
	"time"

	"golang.org/x/sys/unix"
)

// The CRI sandbox (pause) container runs no process in the guest: the pod
// VM is the sandbox. Its process is faked: pid is the QEMU process's, it
// "runs" from Start until Kill sends it a signal that would end pause(8), or
// until the VM dies (status 255). Exec, Pids and Stats answer for it without
// the agent.

// pauseExit says whether signal sig ends a pause process and with which
// status: SIGINT and SIGTERM make pause exit 0 (its handler), signals pause
// ignores or that do nothing by default change nothing, any other signal
// kills it (128+sig).
func pauseExit(sig uint32) (status uint32, exits bool) {
	switch unix.Signal(sig) {
	case 0, unix.SIGCHLD, unix.SIGCONT, unix.SIGURG, unix.SIGWINCH:
		return 0, false
	case unix.SIGINT, unix.SIGTERM:
		return 0, true
	default:
		return 128 + sig, true
	}
}

// runPause is the faked sandbox process's waiter.
func (s *service) runPause(p *pod, c *container) {
	status := uint32(vmGoneStatus)
	for done := false; !done; {
		select {
		case sig := <-c.pause:
			status, done = pauseExit(sig)
		case <-p.dead:
			done = true
		}
	}
	s.exitInit(nil, c, c.init, status, time.Now())
}
