package shim

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
)

func TestStdioThroughFIFOs(t *testing.T) {
	a := newFakeAgent(t)
	p := a.newProc("c1/")
	dir := t.TempDir()
	paths := map[string]string{}
	for _, n := range []string{"stdin", "stdout", "stderr"} {
		paths[n] = filepath.Join(dir, n)
		if err := syscall.Mkfifo(paths[n], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	// containerd's side: it opens the FIFOs before creating the task.
	stdinW, err := fifo.OpenFifo(ctx, paths["stdin"], syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CREAT, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	stdoutR := must(fifo.OpenFifo(ctx, paths["stdout"], syscall.O_RDONLY|syscall.O_NONBLOCK, 0))
	stderrR := must(fifo.OpenFifo(ctx, paths["stderr"], syscall.O_RDONLY|syscall.O_NONBLOCK, 0))

	pio, err := startIO(ctx, ctx, a, "ns", "c1", "", stdio{stdin: paths["stdin"], stdout: paths["stdout"], stderr: paths["stderr"]}, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdinW.Write([]byte("input data")); err != nil {
		t.Fatal(err)
	}
	stdinW.Close()
	// CloseIO: what containerd wrote before closing reaches the process,
	// then its stdin is closed.
	pio.closeStdin(5 * time.Second)
	a.mu.Lock()
	gotIn, closed := string(p.stdin), p.closed
	a.mu.Unlock()
	if gotIn != "input data" || !closed {
		t.Errorf("process stdin = %q (closed %v)", gotIn, closed)
	}

	p.out <- []byte("out1 ")
	p.out <- []byte("out2")
	p.errc <- []byte("err")
	p.exit <- 0
	pio.wait()
	if b, _ := io.ReadAll(stdoutR); string(b) != "out1 out2" {
		t.Errorf("stdout = %q", b)
	}
	if b, _ := io.ReadAll(stderrR); string(b) != "err" {
		t.Errorf("stderr = %q", b)
	}
}

func TestOutputPumpKeepsDrainingWhenReaderIsGone(t *testing.T) {
	chunks := [][]byte{[]byte("a"), []byte("b"), []byte("c"), nil}
	reads := 0
	w := &failingWriter{}
	err := pumpOutput(context.Background(), func(context.Context) ([]byte, error) {
		b := chunks[reads]
		reads++
		return b, nil
	}, w, true, nil)
	if err != nil || reads != 4 {
		t.Errorf("pump stopped after %d reads: %v", reads, err)
	}
	if w.writes != 3 || !w.closed {
		t.Errorf("writer: %d writes, closed %v; want every chunk tried, closed at the end", w.writes, w.closed)
	}
}

// Regression: output FIFOs were opened write-only and dropped at the first
// failed write, so once containerd (the reader) went away, say for a
// restart, the container's output was lost for the rest of its life. The
// shim now holds a read end of the FIFO beside its write end (heldFIFO), as
// containerd's runc shim does: what is written while no reader is there
// waits in the FIFO, and a reader that comes back gets everything after
// what the old one read.
func TestOutputFIFOSurvivesReaderRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// As containerd does before it creates the task: the open completes
	// when the shim opens its end.
	var r io.ReadCloser = must(fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0))
	w, err := outputTarget(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	// read hands the pump one chunk per call and says when it is called
	// again: by then the previous chunk's write has returned.
	chunks := make(chan []byte)
	asked := make(chan struct{}, 1)
	read := func(ctx context.Context) ([]byte, error) {
		asked <- struct{}{}
		select {
		case b := <-chunks:
			return b, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	done := make(chan error, 1)
	go func() { done <- pumpOutput(ctx, read, w, false, nil) }()
	send := func(s string) {
		<-asked
		chunks <- []byte(s)
	}
	send("before-")
	buf := make([]byte, len("before-"))
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "before-" {
		t.Fatalf("first reader got %q, %v", buf, err)
	}
	r.Close() // containerd goes away
	send("while-away-")
	send("more-")
	<-asked // both writes above returned with no reader open
	// containerd back: its open returns once the FIFO has a writer. The old
	// write-only FIFO had lost its writer at the first EPIPE.
	reopened := make(chan io.ReadCloser, 1)
	go func() {
		if r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY, 0); err == nil {
			reopened <- r
		}
	}()
	select {
	case r = <-reopened:
		defer r.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the FIFO had no writer left for the reader that came back")
	}
	chunks <- []byte("after")
	send("") // EOF: the pump closes its end
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got []byte
	readAll := make(chan error, 1)
	go func() {
		var err error
		got, err = io.ReadAll(r)
		readAll <- err
	}()
	select {
	case err := <-readAll:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader that came back got no output and no EOF within 10s")
	}
	if string(got) != "while-away-more-after" {
		t.Errorf("reader after the restart got %q, want %q", got, "while-away-more-after")
	}
}

type failingWriter struct {
	writes int
	closed bool
}

func (w *failingWriter) Write([]byte) (int, error) { w.writes++; return 0, syscall.EPIPE }
func (w *failingWriter) Close() error              { w.closed = true; return nil }

func TestTerminalHasNoStderrAndFileURIGetsBoth(t *testing.T) {
	a := newFakeAgent(t)
	p := a.newProc("c1/")
	logPath := filepath.Join(t.TempDir(), "log", "c1.log")
	ctx := context.Background()
	pio, err := startIO(ctx, ctx, a, "ns", "c1", "", stdio{stdout: "file://" + logPath, stderr: "file://" + logPath}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.out <- []byte("o")
	p.exit <- 0
	p2 := a.newProc("c1/e")
	pio.wait()
	if b, _ := os.ReadFile(logPath); string(b) != "o" {
		t.Errorf("log = %q", b)
	}
	// With a terminal only stdout is read: a stderr read would block forever
	// on this fake, and wait() would not return.
	pio2, err := startIO(ctx, ctx, a, "ns", "c1", "e", stdio{terminal: true}, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	p2.exit <- 0
	pio2.wait()
}

func TestUnsupportedStdioScheme(t *testing.T) {
	if _, _, err := outputs(context.Background(), stdio{stdout: "tcp://logs:514"}, "ns", "c1"); !errdefs.IsNotImplemented(err) {
		t.Errorf("tcp:// stdout: %v", err)
	}
}

func TestCleanupTaskKillsLeftoverVM(t *testing.T) {
	root := t.TempDir()
	stateDir := filepath.Join(root, "ns", "sb")
	if err := os.MkdirAll(filepath.Join(stateDir, sharedDirName, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A stand-in for the leftover QEMU: its command line names the state dir.
	vm := exec.Command("/bin/sh", "-c", "sleep 600", stateDir)
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = vm.Wait(); close(exited) }()
	t.Cleanup(func() { _ = vm.Process.Kill() })
	if err := os.WriteFile(filepath.Join(stateDir, vmPidFile), []byte(itoa(vm.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &fakeMounter{}
	// A container of the pod: only its share goes.
	if err := cleanupTask(context.Background(), root, "ns", "sb", "c1", m); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, sharedDirName, "c1")); !os.IsNotExist(err) {
		t.Errorf("container share left: %v", err)
	}
	select {
	case <-exited:
		t.Fatal("VM killed for a container's cleanup")
	default:
	}
	// The sandbox: VM killed, shared dir unmounted, state removed.
	if err := cleanupTask(context.Background(), root, "ns", "sb", "sb", m); err != nil {
		t.Fatal(err)
	}
	<-exited
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		t.Errorf("state dir left: %v", err)
	}
	if !slices.Contains(m.log, "unmount "+filepath.Join(stateDir, sharedDirName)) {
		t.Errorf("mounts: %v", m.log)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestBinaryLogger(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	// A logger in the protocol's shape: ready by closing fd 5, then copy
	// fds 3 and 4 to files.
	script := filepath.Join(dir, "logger")
	body := "#!/bin/sh\nexec 5>&-\ncat <&3 > \"$2.out\" &\ncat <&4 > \"$2.err\"\nwait\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2.env\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := outputs(context.Background(), stdio{stdout: "binary://" + script + "?--path=" + out}, "ns", "c1")
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdout, "to stdout")
	io.WriteString(stderr, "to stderr")
	stdout.Close()
	stderr.Close() // waits for the logger to exit
	for suffix, want := range map[string]string{".out": "to stdout", ".err": "to stderr", ".env": "ns/c1\n"} {
		if b, _ := os.ReadFile(out + suffix); string(b) != want {
			t.Errorf("logger%s = %q, want %q", suffix, b, want)
		}
	}
}

// Regression: the stdin FIFO was opened under the Create request's context,
// so a writer that opened its end after Create returned found the FIFO
// closed ("reading from a closed fifo").
func TestStdinWriterOpeningAfterCreateReturns(t *testing.T) {
	a := newFakeAgent(t)
	p := a.newProc("c1/")
	path := filepath.Join(t.TempDir(), "stdin")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	reqCtx, endRequest := context.WithCancel(context.Background())
	pio, err := startIO(reqCtx, context.Background(), a, "ns", "c1", "", stdio{stdin: path}, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	endRequest() // Create returned
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	<-pio.stdinDone
	a.mu.Lock()
	got, closed := string(p.stdin), p.closed
	a.mu.Unlock()
	if got != "late" || !closed {
		t.Errorf("process stdin = %q (closed %v), want \"late\" then EOF", got, closed)
	}
}

// recordingWriter keeps what is written; Write blocks while block is set,
// until Close.
type recordingWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed chan struct{}
	block  bool
}

func newRecordingWriter(block bool) *recordingWriter {
	return &recordingWriter{closed: make(chan struct{}), block: block}
}

func (w *recordingWriter) Write(b []byte) (int, error) {
	if w.block {
		<-w.closed
		return 0, os.ErrClosed
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func (w *recordingWriter) Close() error {
	select {
	case <-w.closed:
	default:
		close(w.closed)
	}
	return nil
}

func (w *recordingWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// A failed pod's output ends with a line saying why, whether the pump was
// waiting in a read when the pod's context ended or its read had already
// failed (the VM gone before the shim recorded why); a pod that ends
// without failing (torn down) or a process that exits gets no such line.
func TestOutputEndsWithThePodsFailure(t *testing.T) {
	const why = "guest agent is not responding: 3 health checks in a row failed"
	for _, tc := range []struct {
		name     string
		readErr  bool // the read fails before the context ends
		eof      bool // the process exits: the read returns no data
		reason   string
		wantLine bool
	}{
		{name: "waiting read, pod failed", reason: why, wantLine: true},
		{name: "read failed first, pod failed", readErr: true, reason: why, wantLine: true},
		{name: "waiting read, pod torn down", reason: ""},
		{name: "process exited", eof: true, reason: why},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex
			reason := ""
			failure := func() string { mu.Lock(); defer mu.Unlock(); return reason }
			sent := false
			// second is told when the pump reads again: "out" is written.
			second := make(chan struct{}, 1)
			read := func(ctx context.Context) ([]byte, error) {
				if !sent {
					sent = true
					return []byte("out\n"), nil
				}
				second <- struct{}{}
				switch {
				case tc.eof:
					return nil, nil
				case tc.readErr:
					return nil, errors.New("ttrpc: closed")
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}
			w := newRecordingWriter(false)
			done := make(chan error, 1)
			go func() { done <- pumpOutput(ctx, read, w, true, failure) }()
			<-second
			if tc.eof {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			// As watchPod: the reason first, then the context.
			mu.Lock()
			reason = tc.reason
			mu.Unlock()
			cancel()
			if !tc.eof {
				<-done
			}
			want := "out\n"
			if tc.wantLine {
				want += failureLine(why)
			}
			if got := w.String(); got != want {
				t.Errorf("output %q, want %q", got, want)
			}
			select {
			case <-w.closed:
			default:
				t.Error("writer not closed")
			}
		})
	}
	if line := failureLine(why); !strings.HasPrefix(line, "veil: the pod VM failed") || !strings.Contains(line, "status 255") || !strings.HasSuffix(line, why+"\n") {
		t.Errorf("failureLine = %q", line)
	}
}

// A reader that is gone for good (a FIFO nobody drains) does not hold the
// pump on the failure line: the write is given up after
// failureWriteTimeout.
func TestFailureLineDoesNotHoldThePump(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := newRecordingWriter(true)
	done := make(chan error, 1)
	go func() {
		done <- pumpOutput(ctx, func(ctx context.Context) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, w, true, func() string { return "VM exited" })
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * failureWriteTimeout):
		t.Fatal("pump held by a write nobody reads")
	}
}
