package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

// fakeRunc stands in for runc on the host: "create" starts the spec's
// process stopped (as runc init waits for start), "start" continues it,
// "exec" starts the process at once. The processes are real host
// processes with the pipes go-runc's IO gives them, reaped by the real
// reaper, so everything but runc itself is exercised. It records calls.
type fakeRunc struct {
	Runc // unimplemented methods panic

	mu    sync.Mutex
	calls []string
	init  map[string]int
	fifo  map[string]string
	execs map[string][]int
}

func newFakeRunc() *fakeRunc {
	return &fakeRunc{init: map[string]int{}, fifo: map[string]string{}, execs: map[string][]int{}}
}

func (f *fakeRunc) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeRunc) called(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

// spawn starts args; with a fifo, the process first waits for a line on
// it, as runc init waits on its exec fifo until "runc start".
func (f *fakeRunc) spawn(args []string, stdio runc.IO, pidFile, fifo string) (int, error) {
	script := `exec "$@"`
	if fifo != "" {
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			return 0, err
		}
		script = `read _ < "$0"; exec "$@"`
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, fifo}, args...)...)
	if stdio != nil {
		stdio.Set(cmd)
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if c, ok := stdio.(runc.StartCloser); ok {
		_ = c.CloseAfterStart()
	}
	pid := cmd.Process.Pid
	return pid, os.WriteFile(pidFile, []byte(strconv.Itoa(pid)), 0o644)
}

func (f *fakeRunc) Create(_ context.Context, id, bundle string, opts *runc.CreateOpts) error {
	f.record("create %s no-pivot=%v", id, opts.NoPivot)
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	pid, err := f.spawn(s.Process.Args, opts.IO, opts.PidFile, filepath.Join(bundle, "exec.fifo"))
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.init[id] = pid
	f.fifo[id] = filepath.Join(bundle, "exec.fifo")
	f.mu.Unlock()
	return nil
}

func (f *fakeRunc) Start(_ context.Context, id string) error {
	f.record("start %s", id)
	f.mu.Lock()
	fifo := f.fifo[id]
	f.mu.Unlock()
	return os.WriteFile(fifo, []byte("start\n"), 0)
}

func (f *fakeRunc) Exec(_ context.Context, id string, p specs.Process, opts *runc.ExecOpts) error {
	f.record("exec %s detach=%v %s", id, opts.Detach, strings.Join(p.Args, " "))
	pid, err := f.spawn(p.Args, opts.IO, opts.PidFile, "")
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.execs[id] = append(f.execs[id], pid)
	f.mu.Unlock()
	return nil
}

func (f *fakeRunc) Kill(_ context.Context, id string, sig int, opts *runc.KillOpts) error {
	f.record("kill %s %d all=%v", id, sig, opts.All)
	f.mu.Lock()
	pids := append([]int{f.init[id]}, f.execs[id]...)
	f.mu.Unlock()
	if !opts.All {
		pids = pids[:1]
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.Signal(sig))
	}
	return nil
}

func (f *fakeRunc) Delete(ctx context.Context, id string, opts *runc.DeleteOpts) error {
	f.record("delete %s force=%v", id, opts.Force)
	if opts.Force {
		return f.Kill(ctx, id, int(syscall.SIGKILL), &runc.KillOpts{All: true})
	}
	return nil
}

func (f *fakeRunc) Ps(_ context.Context, id string) ([]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int{f.init[id]}, f.execs[id]...), nil
}

func (f *fakeRunc) Pause(_ context.Context, id string) error  { f.record("pause %s", id); return nil }
func (f *fakeRunc) Resume(_ context.Context, id string) error { f.record("resume %s", id); return nil }
func (f *fakeRunc) Update(_ context.Context, id string, r *specs.LinuxResources) error {
	f.record("update %s", id)
	return nil
}

// fakeMounter records mounts instead of mounting.
type fakeMounter struct {
	mu      sync.Mutex
	mounted []string
}

func (m *fakeMounter) Mount(p storage.Plan) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounted = append(m.mounted, p.Target)
	return nil
}

func (m *fakeMounter) Unmount(target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, t := range m.mounted {
		if t == target {
			m.mounted = append(m.mounted[:i], m.mounted[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s not mounted", target)
}

type harness struct {
	m      *Manager
	runc   *fakeRunc
	mounts *fakeMounter
	shared string
	ctx    context.Context
}

func newHarness(t *testing.T, bufferBytes int) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := reaper.New(log)
	go r.Run(ctx)
	f := newFakeRunc()
	mounts := &fakeMounter{}
	shared := t.TempDir()
	dir := t.TempDir()
	m := New(Config{
		NewRunc:     func(string) Runc { return f },
		Exits:       r,
		Mounter:     mounts,
		BundleRoot:  filepath.Join(dir, "containers"),
		SharedDir:   shared,
		CgroupRoot:  filepath.Join(dir, "cgroup"),
		BufferBytes: bufferBytes,
		Log:         log,
	})
	t.Cleanup(func() { _ = m.RemoveAll(context.Background()) })
	return &harness{m: m, runc: f, mounts: mounts, shared: shared, ctx: ctx}
}

func (h *harness) create(t *testing.T, id string, stdin bool, args ...string) int {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(h.shared, id, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(specs.Spec{Process: &specs.Process{Args: args, Cwd: "/"}})
	pid, err := h.m.Create(h.ctx, CreateRequest{
		ID: id, Spec: spec, Stdin: stdin,
		Rootfs: storage.Spec{Driver: "shared", Source: id + "/rootfs"},
	})
	if err != nil {
		t.Fatalf("Create %s: %v", id, err)
	}
	return pid
}

// drain reads a stream to EOF.
func drain(ctx context.Context, read func(context.Context, string, string, int) ([]byte, error), id, execID string) ([]byte, error) {
	var out []byte
	for {
		p, err := read(ctx, id, execID, 4096)
		if isEOF(err) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, p...)
	}
}

func TestRunToCompletionDeliversAllOutputBeforeWait(t *testing.T) {
	h := newHarness(t, 4096) // much smaller than the output: backpressure
	const lines = 20000
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; exit 3`, lines)
	h.create(t, "c1", false, "/bin/sh", "-c", script)

	if st, _ := h.m.State("c1"); st.Status != StatusCreated {
		t.Fatalf("status before start = %v, want created", st.Status)
	}
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		data []byte
		err  error
	}
	outc, errc := make(chan result), make(chan result)
	go func() { d, err := drain(h.ctx, h.m.ReadStdout, "c1", ""); outc <- result{d, err} }()
	go func() { d, err := drain(h.ctx, h.m.ReadStderr, "c1", ""); errc <- result{d, err} }()

	status, at, err := h.m.Wait(h.ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	if status != 3 || at.IsZero() {
		t.Fatalf("Wait = %d at %v, want 3 with a time", status, at)
	}
	out, errOut := <-outc, <-errc
	for name, r := range map[string]result{"out": out, "err": errOut} {
		if r.err != nil {
			t.Fatal(r.err)
		}
		got := strings.Split(strings.TrimSuffix(string(r.data), "\n"), "\n")
		if len(got) != lines {
			t.Fatalf("std%s: %d lines, want %d", name, len(got), lines)
		}
		for i, l := range got {
			if l != fmt.Sprintf("%s %d", name, i) {
				t.Fatalf("std%s line %d = %q: output out of order", name, i, l)
			}
		}
	}
	st, err := h.m.State("c1")
	if err != nil || st.Status != StatusStopped || st.ExitStatus != 3 {
		t.Fatalf("State = %+v, %v; want stopped with status 3", st, err)
	}
}

func TestWaitReturnsOnlyAfterOutputReachedBuffers(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", false, "/bin/sh", "-c", `printf 'last words'; exit 0`)
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Wait(h.ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	// Nobody read before Wait: all output must now be buffered, then EOF.
	out, err := drain(h.ctx, h.m.ReadStdout, "c1", "")
	if err != nil || string(out) != "last words" {
		t.Fatalf("stdout after Wait = %q, %v", out, err)
	}
}

func TestStdinRoundTripAndEOF(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", true, "/bin/cat")
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	n, err := h.m.WriteStdin(h.ctx, "c1", "", []byte("hello stdin"))
	if err != nil || n != 11 {
		t.Fatalf("WriteStdin = %d, %v", n, err)
	}
	if err := h.m.CloseStdin("c1", ""); err != nil {
		t.Fatal(err)
	}
	status, _, err := h.m.Wait(h.ctx, "c1", "")
	if err != nil || status != 0 {
		t.Fatalf("cat after CloseStdin: status %d, %v (did it get EOF?)", status, err)
	}
	out, _ := drain(h.ctx, h.m.ReadStdout, "c1", "")
	if string(out) != "hello stdin" {
		t.Fatalf("stdout %q", out)
	}
	if _, err := h.m.WriteStdin(h.ctx, "c1", "", []byte("x")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("WriteStdin after CloseStdin = %v, want FailedPrecondition", err)
	}
}

func TestExecSignalAndDelete(t *testing.T) {
	h := newHarness(t, 1<<20)
	initPid := h.create(t, "c1", false, "/bin/sh", "-c", "exec sleep 1000")
	if _, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e1", Process: []byte(`{"args":["/bin/sh","-c","echo exec; exit 0"]}`)}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec before start = %v, want FailedPrecondition", err)
	}
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	pid, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e1", Process: []byte(`{"args":["/bin/sh","-c","echo exec; exec sleep 1000"]}`)})
	if err != nil {
		t.Fatal(err)
	}
	if !h.runc.called("exec c1 detach=true") {
		t.Fatalf("runc exec not detached: %v", h.runc.calls)
	}
	if _, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e1", Process: []byte(`{"args":["true"]}`)}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate exec id = %v, want AlreadyExists", err)
	}
	pids, err := h.m.Pids(h.ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	want := []ProcessInfo{{Pid: initPid}, {Pid: pid, ExecID: "e1"}}
	if fmt.Sprint(pids) != fmt.Sprint(want) {
		t.Fatalf("Pids = %v, want %v", pids, want)
	}
	if err := h.m.DeleteProcess("c1", "e1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("DeleteProcess of a running exec = %v, want FailedPrecondition", err)
	}
	first, err := h.m.ReadStdout(h.ctx, "c1", "e1", 100)
	if err != nil || string(first) != "exec\n" {
		t.Fatalf("exec stdout %q, %v", first, err)
	}
	if err := h.m.Signal(h.ctx, "c1", "e1", int(syscall.SIGTERM), false); err != nil {
		t.Fatal(err)
	}
	status, _, err := h.m.Wait(h.ctx, "c1", "e1")
	if err != nil || status != 128+int(syscall.SIGTERM) {
		t.Fatalf("exec Wait = %d, %v; want 143", status, err)
	}
	if rest, _ := drain(h.ctx, h.m.ReadStdout, "c1", "e1"); len(rest) != 0 {
		t.Fatalf("exec stdout after EOF point %q", rest)
	}
	if err := h.m.Signal(h.ctx, "c1", "e1", int(syscall.SIGTERM), false); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("signal to exited exec = %v, want NotFound", err)
	}
	if err := h.m.DeleteProcess("c1", "e1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Wait(h.ctx, "c1", "e1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Wait after DeleteProcess = %v, want NotFound", err)
	}

	if err := h.m.Remove(h.ctx, "c1", false); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Remove of running container without force = %v, want FailedPrecondition", err)
	}
	if err := h.m.Signal(h.ctx, "c1", "", int(syscall.SIGKILL), true); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := h.m.Wait(h.ctx, "c1", ""); status != 137 {
		t.Fatalf("init killed by SIGKILL: status %d, want 137", status)
	}
	if _, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e2", Process: []byte(`{"args":["true"]}`)}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec into stopped container = %v, want FailedPrecondition", err)
	}
	if err := h.m.Remove(h.ctx, "c1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.m.bundle("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("bundle left after Remove: %v", err)
	}
	if _, err := h.m.State("c1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("State after Remove = %v, want NotFound", err)
	}
}

func TestForceRemoveKillsAndUnmounts(t *testing.T) {
	h := newHarness(t, 1<<20)
	if err := os.MkdirAll(filepath.Join(h.shared, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(h.shared, "vol"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := []byte(`{"process":{"args":["/bin/sh","-c","exec sleep 1000"]},"linux":{"cgroupsPath":"/host/path"}}`)
	_, err := h.m.Create(h.ctx, CreateRequest{
		ID: "c1", Spec: spec,
		Rootfs:   storage.Spec{Driver: "shared", Source: "c1/rootfs"},
		Storages: []storage.Spec{{Driver: "shared", Source: "vol", MountPoint: "/run/veil/volumes/c1/vol"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var written specs.Spec
	b, _ := os.ReadFile(filepath.Join(h.m.bundle("c1"), "config.json"))
	if err := json.Unmarshal(b, &written); err != nil {
		t.Fatal(err)
	}
	realShared, _ := filepath.EvalSymlinks(h.shared)
	if written.Root.Path != filepath.Join(realShared, "c1/rootfs") || written.Linux.CgroupsPath != "/veil/c1" {
		t.Fatalf("bundle config root %q cgroups %q", written.Root.Path, written.Linux.CgroupsPath)
	}
	if !h.runc.called("create c1 no-pivot=false") {
		t.Fatalf("runc create run with --no-pivot (a chroot escape): %v", h.runc.calls)
	}
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Remove(h.ctx, "c1", true); err != nil {
		t.Fatal(err)
	}
	if !h.runc.called("delete c1 force=true") {
		t.Fatalf("force remove did not force-delete: %v", h.runc.calls)
	}
	if len(h.mounts.mounted) != 0 {
		t.Fatalf("storages still mounted after Remove: %v", h.mounts.mounted)
	}
}

func TestBadRequestsLeaveManagerHealthy(t *testing.T) {
	h := newHarness(t, 1<<20)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(h.shared, "evil")); err != nil {
		t.Fatal(err)
	}
	good := []byte(`{"process":{"args":["true"]}}`)
	for _, tc := range []struct {
		name string
		req  CreateRequest
		want error
	}{
		{"malformed spec", CreateRequest{ID: "x", Spec: []byte(`{"process":`), Rootfs: storage.Spec{Driver: "shared", Source: "ok/rootfs"}}, errdefs.ErrInvalidArgument},
		{"rootfs with ..", CreateRequest{ID: "x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "../etc"}}, errdefs.ErrInvalidArgument},
		{"absolute rootfs", CreateRequest{ID: "x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "/etc"}}, errdefs.ErrInvalidArgument},
		{"rootfs via symlink out", CreateRequest{ID: "x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "evil"}}, errdefs.ErrInvalidArgument},
		{"missing rootfs", CreateRequest{ID: "x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "nope/rootfs"}}, errdefs.ErrNotFound},
		{"bad id", CreateRequest{ID: "../x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "ok/rootfs"}}, errdefs.ErrInvalidArgument},
		{"storage escape", CreateRequest{ID: "x", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "ok/rootfs"},
			Storages: []storage.Spec{{Driver: "shared", Source: "../../etc", MountPoint: "/mnt"}}}, errdefs.ErrInvalidArgument},
	} {
		_ = os.MkdirAll(filepath.Join(h.shared, "ok", "rootfs"), 0o755)
		if _, err := h.m.Create(h.ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: Create error = %v, want %v", tc.name, err, tc.want)
		}
	}
	if ids := h.m.IDs(); len(ids) != 0 {
		t.Fatalf("failed creates left containers: %v", ids)
	}
	if h.runc.called("create") {
		t.Fatalf("runc ran for a rejected request: %v", h.runc.calls)
	}
	for name, err := range map[string]error{
		"State":  func() error { _, err := h.m.State("nope"); return err }(),
		"Start":  h.m.Start(h.ctx, "nope"),
		"Remove": h.m.Remove(h.ctx, "nope", true),
		"Signal": h.m.Signal(h.ctx, "nope", "", 9, false),
		"Pause":  h.m.Pause(h.ctx, "nope"),
		"Stats":  func() error { _, err := h.m.Stats("nope"); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s of unknown container = %v, want NotFound", name, err)
		}
	}
	// Still healthy: a good container runs.
	h.create(t, "ok", false, "/bin/sh", "-c", "exit 0")
	if _, err := h.m.Create(h.ctx, CreateRequest{ID: "ok", Spec: good, Rootfs: storage.Spec{Driver: "shared", Source: "ok/rootfs"}}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("duplicate id = %v, want AlreadyExists", err)
	}
	if err := h.m.Start(h.ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	if status, _, err := h.m.Wait(ctx, "ok", ""); err != nil || status != 0 {
		t.Fatalf("after bad requests: Wait = %d, %v", status, err)
	}
}

func TestPauseResumeUpdate(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", false, "/bin/sh", "-c", "exec sleep 1000")
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Pause(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.m.State("c1"); st.Status != StatusPaused {
		t.Fatalf("after pause: %v", st.Status)
	}
	if _, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e", Process: []byte(`{"args":["true"]}`)}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("exec into paused container = %v, want FailedPrecondition", err)
	}
	if err := h.m.Resume(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.m.State("c1"); st.Status != StatusRunning {
		t.Fatalf("after resume: %v", st.Status)
	}
	if err := h.m.Update(h.ctx, "c1", []byte(`{"pids":{"limit":10}}`)); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Update(h.ctx, "c1", []byte(`nope`)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Update with bad JSON = %v, want InvalidArgument", err)
	}
	if !h.runc.called("pause c1") || !h.runc.called("resume c1") || !h.runc.called("update c1") {
		t.Fatalf("runc calls %v", h.runc.calls)
	}
}

// isEOF reports the end of a stream.
func isEOF(err error) bool { return errors.Is(err, io.EOF) }

func TestWriteStdinStopsWhenCallerGivesUp(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", true, "/bin/sh", "-c", "exec sleep 1000") // never reads stdin
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error)
	go func() {
		_, err := h.m.WriteStdin(ctx, "c1", "", make([]byte, 1<<20)) // more than a pipe holds
		done <- err
	}()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("WriteStdin into a full pipe returned no error after its context ended")
	}
}

// Output the host may not read: a process writing 3 MiB to each stream,
// three times the readable buffer, with nobody reading, runs to its exit;
// Wait reports it; the guest keeps the tails; reads are refused. With
// readable buffers the process would block on its next write forever
// (kata#10680).
func TestDrainedOutputNeverBlocksTheProcess(t *testing.T) {
	h := newHarness(t, 1<<20)
	if err := os.MkdirAll(filepath.Join(h.shared, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := `head -c 3145728 /dev/zero; printf 'out end'; head -c 3145728 /dev/zero >&2; printf 'err end' >&2; exit 5`
	spec, _ := json.Marshal(specs.Spec{Process: &specs.Process{Args: []string{"/bin/sh", "-c", script}, Cwd: "/"}})
	if _, err := h.m.Create(h.ctx, CreateRequest{
		ID: "c1", Spec: spec, DrainOutput: true,
		Rootfs: storage.Spec{Driver: "shared", Source: "c1/rootfs"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	status, at, err := h.m.Wait(ctx, "c1", "")
	if err != nil {
		t.Fatalf("Wait for a process whose output nobody reads: %v (blocked on a full pipe?)", err)
	}
	if status != 5 || at.IsZero() {
		t.Fatalf("Wait = %d at %v, want 5 with a time", status, at)
	}
	out, errOut, err := h.m.OutputTail("c1", "")
	if err != nil {
		t.Fatal(err)
	}
	for name, tail := range map[string]Tail{"out": out, "err": errOut} {
		end := name + " end"
		if tail.Total != 3<<20+int64(len(end)) || len(tail.Data) != DrainTailBytes || !strings.HasSuffix(string(tail.Data), end) {
			t.Errorf("std%s tail: %d bytes kept of %d, ending %q; want %d of %d ending %q",
				name, len(tail.Data), tail.Total, tail.Data[max(0, len(tail.Data)-10):], DrainTailBytes, 3<<20+len(end), end)
		}
	}
	for name, read := range map[string]func(context.Context, string, string, int) ([]byte, error){"stdout": h.m.ReadStdout, "stderr": h.m.ReadStderr} {
		if _, err := read(h.ctx, "c1", "", 10); !errors.Is(err, errdefs.ErrPermissionDenied) {
			t.Errorf("%s of a drained process = %v, want PermissionDenied", name, err)
		}
	}
}

func TestDrainedExecAndReadableTail(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", false, "/bin/sh", "-c", "exec sleep 1000")
	if err := h.m.Start(h.ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.Exec(h.ctx, ExecRequest{ID: "c1", ExecID: "e1", DrainOutput: true,
		Process: []byte(`{"args":["/bin/sh","-c","head -c 2097152 /dev/zero; echo done"]}`)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, time.Minute)
	defer cancel()
	if status, _, err := h.m.Wait(ctx, "c1", "e1"); err != nil || status != 0 {
		t.Fatalf("drained exec: Wait = %d, %v", status, err)
	}
	out, _, err := h.m.OutputTail("c1", "e1")
	if err != nil || !strings.HasSuffix(string(out.Data), "done\n") {
		t.Fatalf("exec stdout tail ends %q, %v", out.Data[max(0, len(out.Data)-10):], err)
	}
	// The init's output is the host's: no tail kept in the guest.
	if out, errOut, err := h.m.OutputTail("c1", ""); err != nil || out.Data != nil || errOut.Data != nil {
		t.Fatalf("readable init's tail = %q, %q, %v; want none", out.Data, errOut.Data, err)
	}
}
