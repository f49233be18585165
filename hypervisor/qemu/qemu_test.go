package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/hypervisor"
)

// fakeQEMUEnv makes the test binary act as QEMU (see fakeQEMU) when set to
// a mode: "ok" serves QMP and exits on quit, "deaf" ignores quit, "die"
// fails at once like QEMU rejecting its command line.
const fakeQEMUEnv = "VEIL_TEST_FAKE_QEMU"

func init() {
	// Keep the main goroutine on the main thread, which Go never ends, so
	// that TestQEMUOutlivesTheStartingThread's goroutine gets another one.
	runtime.LockOSThread()
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeQEMUEnv); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	// A test that leaves a goroutine running fails the package: the driver
	// runs for the pod's whole life, one watcher per VM.
	goleak.VerifyTestMain(m)
}

// fakeQEMU honours the parts of the command line the driver relies on: the
// pid file, the console file and the QMP socket passed as fd.
func fakeQEMU(mode string, args []string) int {
	var console, pidfile string
	qmpFD, consoleFD := -1, -1
	for i := 0; i+1 < len(args); i++ {
		v := args[i+1]
		switch {
		case args[i] == "-pidfile":
			pidfile = v
		case args[i] == "-chardev" && strings.HasPrefix(v, "file,id=console,path="):
			console = strings.TrimPrefix(v, "file,id=console,path=")
		case args[i] == "-add-fd":
			fmt.Sscanf(v, "fd=%d,set=", &consoleFD)
		case args[i] == "-chardev" && strings.HasPrefix(v, "socket,id=qmp,fd="):
			fmt.Sscanf(strings.TrimPrefix(v, "socket,id=qmp,fd="), "%d", &qmpFD)
		}
	}
	if mode == "die" {
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: could not load kernel '/nope'")
		return 1
	}
	os.WriteFile(pidfile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644)
	out := os.NewFile(uintptr(consoleFD), "console")
	if console != "/dev/fdset/1,append=on" || out == nil {
		fmt.Fprintf(os.Stderr, "console %q on fd %d: want /dev/fdset/1,append=on with -add-fd\n", console, consoleFD)
		return 2
	}
	out.WriteString("fake guest booted\nagent: serving\n")
	if mode == "chatty" {
		// A long-lived guest's console: 2000 numbered lines (about 110 KiB).
		for i := range 2000 {
			fmt.Fprintf(out, "time=t level=INFO msg=\"line %04d of a chatty guest agent\" c=veil-agent\n", i)
		}
		out.WriteString("the last line\n")
	}
	l, err := net.FileListener(os.NewFile(uintptr(qmpFD), "qmp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "qmp fd:", err)
		return 2
	}
	for {
		conn, err := l.Accept()
		if err != nil {
			return 2
		}
		fmt.Fprintln(conn, `{"QMP": {"version": {}, "capabilities": []}}`)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req struct {
				Execute string          `json:"execute"`
				ID      json.RawMessage `json:"id"`
			}
			json.Unmarshal(sc.Bytes(), &req)
			fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
			if req.Execute == "quit" && mode != "deaf" {
				return 0
			}
		}
		conn.Close()
	}
}

func newFake(t *testing.T, mode string) (*QEMU, string) {
	t.Helper()
	t.Setenv(fakeQEMUEnv, mode)
	dir := t.TempDir()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	q, err := New(hypervisor.Config{
		ID: "fake", StateDir: dir, Binary: os.Args[0], Kernel: kernel,
		Accel: hypervisor.AccelTCG, Transport: hypervisor.TransportSerial,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { q.Cleanup() })
	return q, dir
}

func startFake(t *testing.T, mode string) (*QEMU, string) {
	t.Helper()
	q, dir := newFake(t, mode)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return q, dir
}

func waitDone(t *testing.T, q *QEMU, within time.Duration) {
	t.Helper()
	select {
	case <-q.Done():
	case <-time.After(within):
		t.Fatalf("Done not closed within %v", within)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	e, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range e {
		names = append(names, f.Name())
	}
	if len(names) > 0 {
		t.Errorf("state dir not empty after Cleanup: %v", names)
	}
}

func TestKillIsReportedAndCleanupLeavesNothing(t *testing.T) {
	fds := openFDs(t)
	q, dir := startFake(t, "ok")
	pid := q.PID()
	if pid <= 0 {
		t.Fatalf("PID() = %d after Start", pid)
	}
	if b, err := os.ReadFile(filepath.Join(dir, PIDFile)); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(pid) {
		t.Errorf("pid file = %q (%v), want %d", b, err, pid)
	}
	if err := q.Err(); err != nil {
		t.Errorf("Err() while running = %v, want nil", err)
	}
	conn, err := q.DialAgent(context.Background())
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	conn.Close()
	if err := q.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	waitDone(t, q, time.Second)
	err = q.Err()
	if !errors.Is(err, hypervisor.ErrVMExited) {
		t.Fatalf("Err() = %v, want ErrVMExited", err)
	}
	for _, want := range []string{"signal: killed", "agent: serving"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %q, want it to contain %q", err, want)
		}
	}
	if _, err := q.DialAgent(context.Background()); !errors.Is(err, hypervisor.ErrVMExited) {
		t.Errorf("DialAgent after exit: %v, want ErrVMExited", err)
	}
	if err := q.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if err := q.Cleanup(); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	assertEmpty(t, dir)
	if err := q.Kill(); err != nil {
		t.Errorf("Kill after exit: %v", err)
	}
	if got := openFDs(t); got != fds {
		t.Errorf("open fds: %d before, %d after", fds, got)
	}
}

func TestStopQuitsOverQMP(t *testing.T) {
	q, _ := startFake(t, "ok")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the guest will not power off by itself: go straight to quit
	start := time.Now()
	if err := q.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if d := time.Since(start); d >= quitGrace {
		t.Errorf("Stop took %v: quit was not honoured", d)
	}
	if err := q.Err(); err == nil || !strings.Contains(err.Error(), "exited with status 0") {
		t.Errorf("Err() = %v, want a clean exit", err)
	}
	if err := q.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopKillsQEMUThatIgnoresQuit(t *testing.T) {
	q, _ := startFake(t, "deaf")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := q.Err(); err == nil || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("Err() = %v, want killed", err)
	}
}

func TestStartReportsQEMUsOwnError(t *testing.T) {
	q, dir := newFake(t, "die")
	err := q.Start(context.Background())
	if err == nil {
		t.Fatal("Start succeeded with a QEMU that exits at once")
	}
	if !errors.Is(err, hypervisor.ErrVMExited) || !strings.Contains(err.Error(), "could not load kernel") {
		t.Errorf("Start: %v, want ErrVMExited with QEMU's message", err)
	}
	select {
	case <-q.Done():
	default:
		t.Error("Done not closed after a failed Start")
	}
	if err := q.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	assertEmpty(t, dir)
	if err := q.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
}

func TestNewChecksConfig(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, nil, 0o644)
	image, odd := filepath.Join(dir, "rootfs.erofs"), filepath.Join(dir, "odd.erofs")
	os.WriteFile(image, make([]byte, 2*RootImageAlign), 0o644)
	os.WriteFile(odd, make([]byte, RootImageAlign+4096), 0o644)
	good := hypervisor.Config{ID: "x", StateDir: dir, Kernel: kernel, Binary: os.Args[0], Transport: hypervisor.TransportSerial}
	tests := []struct {
		name string
		mod  func(*hypervisor.Config)
		want string
	}{
		{"no id", func(c *hypervisor.Config) { c.ID = "" }, "ID is empty"},
		{"missing state dir", func(c *hypervisor.Config) { c.StateDir = filepath.Join(dir, "nope") }, "state dir"},
		{"missing kernel", func(c *hypervisor.Config) { c.Kernel = filepath.Join(dir, "nope") }, "guest image"},
		{"missing initrd", func(c *hypervisor.Config) { c.Initrd = filepath.Join(dir, "nope") }, "guest image"},
		{"shared dir is a file", func(c *hypervisor.Config) { c.SharedDir = kernel }, "not a directory"},
		{"missing root image", func(c *hypervisor.Config) { c.RootImage = filepath.Join(dir, "nope") }, "guest root image"},
		{"root image not 2 MiB aligned", func(c *hypervisor.Config) { c.RootImage = odd }, "size 2101248 is not a non-zero multiple of 2097152"},
		{"root image is a directory", func(c *hypervisor.Config) { c.RootImage = dir }, "not a regular file"},
		{"root image and initrd", func(c *hypervisor.Config) { c.RootImage, c.Initrd = image, kernel }, "are both set"},
		{"root image for a TEE", func(c *hypervisor.Config) { c.RootImage, c.TEE.Kind = image, hypervisor.TEESample }, "measured initramfs"},
		{"unknown accel", func(c *hypervisor.Config) { c.Accel = "hvf" }, `unknown accelerator "hvf"`},
		{"unknown transport", func(c *hypervisor.Config) { c.Transport = "tcp" }, `unknown agent transport "tcp"`},
		{"vsock without cid", func(c *hypervisor.Config) { c.Transport = hypervisor.TransportVsock }, "VsockCID"},
		{"missing binary", func(c *hypervisor.Config) { c.Binary = "/nonexistent/qemu" }, "finding qemu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			_, err := New(cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	q, err := New(good, nil)
	if err != nil {
		t.Fatalf("New(good): %v", err)
	}
	if q.cfg.VCPUs != DefaultVCPUs || q.cfg.MemoryMiB != DefaultMemoryMiB {
		t.Errorf("defaults: %d vcpus, %d MiB", q.cfg.VCPUs, q.cfg.MemoryMiB)
	}
	withImage := good
	withImage.RootImage = image
	if q, err = New(withImage, nil); err != nil {
		t.Errorf("New with a root image: %v", err)
	} else if q.rootImageBytes != 2*RootImageAlign {
		t.Errorf("New with a root image: size %d, want %d", q.rootImageBytes, 2*RootImageAlign)
	}
}

// TestQEMUOutlivesTheStartingThread pins Pdeathsig's trap: it fires when the
// OS thread that forked QEMU ends. Start is called from a goroutine that
// exits locked to its thread, which makes Go end that thread; QEMU must live on.
func TestQEMUOutlivesTheStartingThread(t *testing.T) {
	q, _ := newFake(t, "ok")
	type started struct {
		tid int
		err error
	}
	ch := make(chan started, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		ch <- started{unix.Gettid(), q.Start(context.Background())}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatalf("Start: %v", s.err)
	}
	task := fmt.Sprintf("/proc/self/task/%d", s.tid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(task + "/stat")
			t.Fatalf("thread %d (pid %d) that called Start did not end: %s", s.tid, os.Getpid(), b)
		}
		runtime.Gosched()
	}
	// The thread is gone; had QEMU been forked from it, Pdeathsig would have
	// killed it by now. QMP answering proves it runs.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := q.qmp.execute(ctx, "query-status", nil); err != nil {
		t.Fatalf("qemu died with the thread that started it: %v (%v)", err, q.Err())
	}
	if err := q.Err(); err != nil {
		t.Fatalf("qemu exited: %v", err)
	}
}

// TestConsoleCappedAndForwarded: a guest that writes 110 KiB to its
// console through a 16 KiB x 2 console log leaves at most 32 KiB in the
// state directory, every line reaches Console.Line in order, the exit
// error still ends with the console's last line, and Cleanup removes the
// rotated file too.
func TestConsoleCappedAndForwarded(t *testing.T) {
	t.Setenv(fakeQEMUEnv, "chatty")
	dir := t.TempDir()
	kernel := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	var lines []string
	q, err := New(hypervisor.Config{
		ID: "fake", StateDir: dir, Binary: os.Args[0], Kernel: kernel,
		Accel: hypervisor.AccelTCG, Transport: hypervisor.TransportSerial,
		Console: hypervisor.Console{MaxBytes: 16 << 10, Files: 2, Line: func(l string) { lines = append(lines, l) }},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	expired, cancelStop := context.WithCancel(context.Background())
	cancelStop() // no guest to power off: QMP quit at once
	if err := q.Stop(expired); err != nil {
		t.Fatal(err)
	}
	waitDone(t, q, 10*time.Second)
	var total int64
	for _, name := range []string{ConsoleLog, ConsoleLog + ".1", ConsoleLog + ".2"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil {
			total += fi.Size()
			if name == ConsoleLog+".2" {
				t.Errorf("%s kept with files = 2", name)
			}
		} else if name != ConsoleLog+".2" {
			t.Errorf("%s: %v", name, err)
		}
	}
	if total > 32<<10 {
		t.Errorf("console logs hold %d bytes, over 2 x 16 KiB", total)
	}
	if len(lines) != 2003 || lines[0] != "fake guest booted" || lines[2002] != "the last line" || !strings.Contains(lines[1001], "line 0999 ") {
		t.Errorf("forwarded %d lines (first %q), want 2003 in order", len(lines), lines[:min(2, len(lines))])
	}
	if !strings.Contains(q.Err().Error(), "the last line") {
		t.Errorf("exit error lacks the console's last line: %v", q.Err())
	}
	if err := q.Cleanup(); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, dir)
}
