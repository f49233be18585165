//go:build vm

package vmtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// TestContainerOutputAndExitCode runs a container to completion: the host
// gets its line and its exit code, and it ran under the guest's kernel.
func TestContainerOutputAndExitCode(t *testing.T) {
	ctx := testCtx(t)
	c := shared.client
	createContainer(t, ctx, shared, "exit3", nil, "sh", "-c", "echo hello from the veil guest; uname -r; echo to-stderr >&2; exit 3")
	startContainer(t, ctx, shared, "exit3")
	r := finish(t, ctx, c, "exit3", "", false)
	if r.status != 3 {
		t.Errorf("exit status = %d, want 3", r.status)
	}
	lines := strings.Split(strings.TrimSpace(string(r.stdout)), "\n")
	if len(lines) != 2 || lines[0] != "hello from the veil guest" {
		t.Fatalf("stdout = %q, want the hello line then uname -r", r.stdout)
	}
	if string(r.stderr) != "to-stderr\n" {
		t.Errorf("stderr = %q, want %q", r.stderr, "to-stderr\n")
	}
	var host unix.Utsname
	if err := unix.Uname(&host); err != nil {
		t.Fatal(err)
	}
	hostRelease := unix.ByteSliceToString(host.Release[:])
	guestRelease := lines[1]
	if guestRelease == hostRelease {
		t.Errorf("container's uname -r %q equals the host's: not running in the VM", guestRelease)
	}
	d, err := c.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
	if err != nil {
		t.Fatalf("GuestDetails: %v", err)
	}
	if d.KernelRelease != guestRelease {
		t.Errorf("GuestDetails kernel %q, container saw %q", d.KernelRelease, guestRelease)
	}
	t.Logf("host kernel %s, guest kernel %s", hostRelease, guestRelease)
	st, err := c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "exit3"})
	if err != nil {
		t.Fatalf("StateContainer: %v", err)
	}
	if st.Status != api.Status_STATUS_STOPPED || st.ExitStatus != 3 {
		t.Errorf("state = %v exit %d, want stopped with 3", st.Status, st.ExitStatus)
	}
}

// TestExecSignalAndTTY execs into a running container with and without a
// terminal (resizing it), then signals the container.
func TestExecSignalAndTTY(t *testing.T) {
	ctx := testCtx(t)
	c := shared.client
	const cid = "longrun"
	// The init process traps TERM: PID 1 of a PID namespace ignores signals
	// it has no handler for, so exiting 42 proves the signal arrived.
	createContainer(t, ctx, shared, cid, nil, "sh", "-c", "trap 'exit 42' TERM; echo ready; while true; do sleep 1; done")
	startContainer(t, ctx, shared, cid)
	out := drain(ctx, c, cid, "", false)

	t.Run("exec", func(t *testing.T) {
		if _, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: cid, ExecId: "plain",
			Process: processJSON("sh", "-c", "echo exec-out; echo exec-err >&2; hostname; exit 7")}); err != nil {
			t.Fatalf("ExecProcess: %v", err)
		}
		r := finish(t, ctx, c, cid, "plain", false)
		if r.status != 7 || string(r.stdout) != "exec-out\nvmtest\n" || string(r.stderr) != "exec-err\n" {
			t.Errorf("exec: status %d stdout %q stderr %q, want 7, exec-out+hostname, exec-err", r.status, r.stdout, r.stderr)
		}
		if _, err := c.Process.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: cid, ExecId: "plain"}); err != nil {
			t.Errorf("DeleteProcess: %v", err)
		}
	})

	t.Run("tty", func(t *testing.T) {
		if _, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: cid, ExecId: "tty", Terminal: true, Stdin: true,
			Process: processJSON("sh")}); err != nil {
			t.Fatalf("ExecProcess with tty: %v", err)
		}
		if _, err := c.Process.ResizeTTY(ctx, &api.ResizeTTYRequest{ContainerId: cid, ExecId: "tty", Width: 123, Height: 45}); err != nil {
			t.Fatalf("ResizeTTY: %v", err)
		}
		if _, err := c.Process.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: cid, ExecId: "tty",
			Data: []byte("stty size; tty; exit 9\n")}); err != nil {
			t.Fatalf("WriteStdin: %v", err)
		}
		r := finish(t, ctx, c, cid, "tty", true)
		if r.status != 9 {
			t.Errorf("tty exec exit status = %d, want 9", r.status)
		}
		got := string(r.stdout)
		if !strings.Contains(got, "45 123") {
			t.Errorf("tty output %q lacks the resized size %q", got, "45 123")
		}
		if !strings.Contains(got, "/dev/pts/") {
			t.Errorf("tty output %q: tty does not name a pty", got)
		}
		if !strings.Contains(got, "\r\n") {
			t.Errorf("tty output %q has no CRLF: not a terminal", got)
		}
		if _, err := c.Process.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: cid, ExecId: "tty"}); err != nil {
			t.Errorf("DeleteProcess: %v", err)
		}
	})

	t.Run("signal", func(t *testing.T) {
		if _, err := c.Process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: cid, Signal: uint32(syscall.SIGTERM)}); err != nil {
			t.Fatalf("SignalProcess: %v", err)
		}
		w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: cid})
		if err != nil {
			t.Fatalf("WaitProcess: %v", err)
		}
		if w.ExitStatus != 42 {
			t.Errorf("exit status after SIGTERM = %d, want 42 (the trap)", w.ExitStatus)
		}
		o := <-out
		if o.err != nil || string(o.data) != "ready\n" {
			t.Errorf("init stdout = %q (%v), want ready", o.data, o.err)
		}
	})
}

// TestStdinEOF feeds a container's cat and closes its stdin: cat echoes
// everything and exits 0.
func TestStdinEOF(t *testing.T) {
	ctx := testCtx(t)
	c := shared.client
	const cid = "cat"
	createContainer(t, ctx, shared, cid, &api.CreateContainerRequest{Stdin: true}, "cat")
	startContainer(t, ctx, shared, cid)
	var want bytes.Buffer
	for i := range 200 {
		line := []byte(strings.Repeat("x", i) + "\n")
		want.Write(line)
		if _, err := c.Process.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: cid, Data: line}); err != nil {
			t.Fatalf("WriteStdin: %v", err)
		}
	}
	if _, err := c.Process.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: cid}); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	r := finish(t, ctx, c, cid, "", false)
	if r.status != 0 {
		t.Errorf("cat exit status = %d, want 0", r.status)
	}
	if !bytes.Equal(r.stdout, want.Bytes()) {
		t.Errorf("cat echoed %d bytes, want %d identical bytes", len(r.stdout), want.Len())
	}
}

// TestMiBOfOutput sends 1 MiB of random bytes from the guest: the host
// receives exactly what the guest hashed.
func TestMiBOfOutput(t *testing.T) {
	ctx := testCtx(t)
	c := shared.client
	const cid = "mib"
	createContainer(t, ctx, shared, cid, nil, "sh", "-c",
		"head -c 1048576 /dev/urandom > /dev/shm/blob && sha256sum /dev/shm/blob >&2 && cat /dev/shm/blob")
	startContainer(t, ctx, shared, cid)
	r := finish(t, ctx, c, cid, "", false)
	if r.status != 0 {
		t.Fatalf("exit status %d, stderr %q", r.status, r.stderr)
	}
	guestSum, _, _ := strings.Cut(string(r.stderr), " ")
	sum := sha256.Sum256(r.stdout)
	if len(r.stdout) != 1<<20 || hex.EncodeToString(sum[:]) != guestSum {
		t.Errorf("received %d bytes with sha256 %x; guest sent 1048576 with sha256 %s", len(r.stdout), sum, guestSum)
	}
}
