package shim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/shim/network"
)

// fakeHV is a VM that is "running" from Start until Kill/Stop or die().
type fakeHV struct {
	hypervisor.Hypervisor
	cfg      hypervisor.Config
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	cleanups int
	stopped  bool
	// blockLog records AttachBlock/DetachBlock (blockdev_test.go).
	blockLog []string
	// exitErr, when set before die, is what Err says.
	exitErr error
}

func (h *fakeHV) Start(context.Context) error { return nil }
func (h *fakeHV) PID() int                    { return 4242 }
func (h *fakeHV) Done() <-chan struct{}       { return h.done }
func (h *fakeHV) Err() error {
	if h.exitErr != nil {
		return h.exitErr
	}
	return errors.New("fake vm exited")
}
func (h *fakeHV) die()        { h.once.Do(func() { close(h.done) }) }
func (h *fakeHV) Kill() error { h.die(); return nil }
func (h *fakeHV) Stop(context.Context) error {
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	h.die()
	return nil
}
func (h *fakeHV) Cleanup() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups++
	return nil
}
func (h *fakeHV) DialAgent(context.Context) (net.Conn, error) { return nil, errors.New("fake") }

// Shares exports the shared directory as a 9p share, as QEMU does.
func (h *fakeHV) Shares() []hypervisor.Share {
	if h.cfg.SharedDir == "" {
		return nil
	}
	return []hypervisor.Share{{HostPath: h.cfg.SharedDir, Kind: hypervisor.Share9P, Tag: hypervisor.ShareTag, FSType: "9p", Options: []string{"trans=virtio"}}}
}
func (h *fakeHV) ConsolePath() string { return filepath.Join(h.cfg.StateDir, "fake-console.log") }
func (h *fakeHV) DebugConsolePath() string {
	if !h.cfg.DebugConsole {
		return ""
	}
	return filepath.Join(h.cfg.StateDir, "fake-console.sock")
}

// fakeDrivers is a driver registry whose "qemu" (the default
// hypervisor.driver) is newVM.
func fakeDrivers(newVM hypervisor.Constructor) *hypervisor.Registry {
	r := &hypervisor.Registry{}
	r.Register("qemu", newVM)
	return r
}

// fakeProc is one process in the fake guest.
type fakeProc struct {
	pid    uint32
	out    chan []byte // stdout chunks; closed at exit (after the last chunk)
	errc   chan []byte
	exit   chan uint32
	status uint32
	ended  chan struct{}
	stdin  []byte
	closed bool
}

// fakeAgent is the guest agent: it records what it was asked and runs
// processes that exit when the test says so (or on SIGKILL).
type fakeAgent struct {
	api.SandboxService
	api.ContainerService
	api.ProcessService

	mu        sync.Mutex
	calls     []string
	specs     map[string]*specs.Spec
	procs     map[string]*fakeProc // "cid/execID"
	nextPid   uint32
	oom       chan string
	conn      chan struct{} // closed when the "connection" is gone
	connOnce  sync.Once
	signals   []*api.SignalProcessRequest
	signalErr error
	sandboxes []*api.CreateSandboxRequest
	// sandboxErr, when set, answers CreateSandbox (a guest that refuses
	// the pod).
	sandboxErr error
	creates    []*api.CreateContainerRequest
	// exitOnStart makes StartContainer end the container's init with this
	// status before it returns (a process that dies the moment it starts).
	exitOnStart *uint32
	// readErr, when set, answers every ReadStdout/ReadStderr (a policy
	// that denies reading output); reads counts those calls.
	readErr error
	reads   int
	// hung makes Check (and so the health check) answer nothing until its
	// deadline: an agent that stopped serving.
	hung    bool
	checks  int
	checked chan struct{} // one value per Check call, when there is room
}

// newFakeAgent returns a fake guest that disconnects when the test ends,
// which ends its goroutines (a process's exit watcher, calls blocked in
// the fake) before TestMain's leak check.
func newFakeAgent(t *testing.T) *fakeAgent {
	a := &fakeAgent{specs: map[string]*specs.Spec{}, procs: map[string]*fakeProc{}, nextPid: 100, oom: make(chan string, 4), conn: make(chan struct{}), checked: make(chan struct{}, 16)}
	t.Cleanup(a.disconnect)
	return a
}

func (a *fakeAgent) record(call string) {
	a.mu.Lock()
	a.calls = append(a.calls, call)
	a.mu.Unlock()
}

func (a *fakeAgent) called() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

func (a *fakeAgent) disconnect() { a.connOnce.Do(func() { close(a.conn) }) }

func (a *fakeAgent) newProc(key string) *fakeProc {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextPid++
	p := &fakeProc{pid: a.nextPid, out: make(chan []byte, 16), errc: make(chan []byte, 16), exit: make(chan uint32, 1), ended: make(chan struct{})}
	a.procs[key] = p
	go func() {
		select {
		case p.status = <-p.exit:
		case <-a.conn:
			return
		}
		close(p.out)
		close(p.errc)
		close(p.ended)
	}()
	return p
}

func (a *fakeAgent) proc(cid, eid string) *fakeProc {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.procs[cid+"/"+eid]
}

// gone is the error every call gets once the connection is gone.
func (a *fakeAgent) gone() error {
	select {
	case <-a.conn:
		return errors.New("ttrpc: closed")
	default:
		return nil
	}
}

func (a *fakeAgent) Check(ctx context.Context, _ *api.CheckRequest) (*api.CheckResponse, error) {
	a.mu.Lock()
	a.checks++
	hung := a.hung
	a.mu.Unlock()
	select {
	case a.checked <- struct{}{}:
	default:
	}
	if hung {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-a.conn:
			return nil, a.gone()
		}
	}
	return &api.CheckResponse{Status: api.CheckResponse_SERVING}, nil
}
func (a *fakeAgent) CreateSandbox(_ context.Context, r *api.CreateSandboxRequest) (*emptypb.Empty, error) {
	a.record("CreateSandbox")
	a.mu.Lock()
	a.sandboxes = append(a.sandboxes, r)
	err := a.sandboxErr
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}
func (a *fakeAgent) DestroySandbox(context.Context, *api.DestroySandboxRequest) (*emptypb.Empty, error) {
	a.record("DestroySandbox")
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) Shutdown(context.Context, *api.ShutdownRequest) (*emptypb.Empty, error) {
	a.record("Shutdown")
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) CreateContainer(_ context.Context, r *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	a.record("CreateContainer " + r.ContainerId)
	var s specs.Spec
	if err := json.Unmarshal(r.Spec, &s); err != nil {
		return nil, err
	}
	if r.Rootfs.GetDriver() != "shared" || r.Rootfs.GetSource() != r.ContainerId+"/rootfs" || r.ContainerId == "rejected" {
		return nil, errgrpc.ToGRPC(errdefs.ErrInvalidArgument)
	}
	a.mu.Lock()
	a.specs[r.ContainerId] = &s
	a.creates = append(a.creates, r)
	a.mu.Unlock()
	return &api.CreateContainerResponse{Pid: a.newProc(r.ContainerId + "/").pid}, nil
}
func (a *fakeAgent) StartContainer(_ context.Context, r *api.StartContainerRequest) (*emptypb.Empty, error) {
	a.record("StartContainer " + r.ContainerId)
	a.mu.Lock()
	status := a.exitOnStart
	a.mu.Unlock()
	if p := a.proc(r.ContainerId, ""); p != nil && status != nil {
		p.exit <- *status
		<-p.ended
	}
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) RemoveContainer(_ context.Context, r *api.RemoveContainerRequest) (*emptypb.Empty, error) {
	a.record("RemoveContainer " + r.ContainerId)
	if err := a.gone(); err != nil {
		return nil, err
	}
	if p := a.proc(r.ContainerId, ""); p != nil && r.Force {
		select {
		case p.exit <- 137:
		default:
		}
	}
	return &emptypb.Empty{}, nil
}
func (a *fakeAgent) PauseContainer(_ context.Context, r *api.PauseContainerRequest) (*emptypb.Empty, error) {
	a.record("PauseContainer " + r.ContainerId)
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) ResumeContainer(_ context.Context, r *api.ResumeContainerRequest) (*emptypb.Empty, error) {
	a.record("ResumeContainer " + r.ContainerId)
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) UpdateContainer(_ context.Context, r *api.UpdateContainerRequest) (*emptypb.Empty, error) {
	a.record("UpdateContainer " + r.ContainerId + " " + string(r.Resources))
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) ListPids(_ context.Context, r *api.ListPidsRequest) (*api.ListPidsResponse, error) {
	return &api.ListPidsResponse{Processes: []*api.ProcessInfo{{Pid: 1}, {Pid: 7, ExecId: "e1"}}}, a.gone()
}
func (a *fakeAgent) StatsContainer(_ context.Context, r *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	m, err := typeurl.MarshalAnyToProto(&timestamppb.Timestamp{Seconds: 42}) // any Any: the shim passes it through
	return &api.StatsContainerResponse{Metrics: m}, errors.Join(err, a.gone())
}
func (a *fakeAgent) GetOOMEvent(ctx context.Context, _ *api.GetOOMEventRequest) (*api.GetOOMEventResponse, error) {
	select {
	case id := <-a.oom:
		return &api.GetOOMEventResponse{ContainerId: id}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.conn:
		return nil, a.gone()
	}
}
func (a *fakeAgent) ExecProcess(_ context.Context, r *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	a.record("ExecProcess " + r.ContainerId + "/" + r.ExecId)
	if err := a.gone(); err != nil {
		return nil, err
	}
	return &api.ExecProcessResponse{Pid: a.newProc(r.ContainerId + "/" + r.ExecId).pid}, nil
}
func (a *fakeAgent) WaitProcess(ctx context.Context, r *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	p := a.proc(r.ContainerId, r.ExecId)
	if p == nil {
		return nil, errgrpc.ToGRPC(errdefs.ErrNotFound)
	}
	select {
	case <-p.ended:
		return &api.WaitProcessResponse{ExitStatus: p.status, ExitedAt: timestamppb.Now()}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.conn:
		return nil, a.gone()
	}
}
func (a *fakeAgent) SignalProcess(_ context.Context, r *api.SignalProcessRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	a.signals = append(a.signals, r)
	serr := a.signalErr
	a.mu.Unlock()
	if serr != nil {
		return nil, serr
	}
	if err := a.gone(); err != nil {
		return nil, err
	}
	if r.Signal == 9 {
		keys := []string{r.ContainerId + "/" + r.ExecId}
		if r.All {
			a.mu.Lock()
			keys = nil
			for k := range a.procs {
				if filepath.Dir(k+"x") == r.ContainerId {
					keys = append(keys, k)
				}
			}
			a.mu.Unlock()
		}
		for _, k := range keys {
			a.mu.Lock()
			p := a.procs[k]
			a.mu.Unlock()
			if p != nil {
				select {
				case p.exit <- 137:
				default:
				}
			}
		}
	}
	return &emptypb.Empty{}, nil
}
func (a *fakeAgent) read(ctx context.Context, ch chan []byte) (*api.ReadStreamResponse, error) {
	a.mu.Lock()
	a.reads++
	err := a.readErr
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case b := <-ch:
		return &api.ReadStreamResponse{Data: b}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-a.conn:
		return nil, a.gone()
	}
}
func (a *fakeAgent) ReadStdout(ctx context.Context, r *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	p := a.proc(r.ContainerId, r.ExecId)
	if p == nil {
		return nil, errgrpc.ToGRPC(errdefs.ErrNotFound)
	}
	return a.read(ctx, p.out)
}
func (a *fakeAgent) ReadStderr(ctx context.Context, r *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	p := a.proc(r.ContainerId, r.ExecId)
	if p == nil {
		return nil, errgrpc.ToGRPC(errdefs.ErrNotFound)
	}
	return a.read(ctx, p.errc)
}
func (a *fakeAgent) WriteStdin(_ context.Context, r *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	p := a.proc(r.ContainerId, r.ExecId)
	a.mu.Lock()
	p.stdin = append(p.stdin, r.Data...)
	a.mu.Unlock()
	return &api.WriteStdinResponse{Len: uint32(len(r.Data))}, nil
}
func (a *fakeAgent) CloseStdin(_ context.Context, r *api.CloseStdinRequest) (*emptypb.Empty, error) {
	p := a.proc(r.ContainerId, r.ExecId)
	a.mu.Lock()
	p.closed = true
	a.mu.Unlock()
	a.record("CloseStdin " + r.ContainerId + "/" + r.ExecId)
	return &emptypb.Empty{}, nil
}
func (a *fakeAgent) DeleteProcess(_ context.Context, r *api.DeleteProcessRequest) (*emptypb.Empty, error) {
	a.record("DeleteProcess " + r.ContainerId + "/" + r.ExecId)
	return &emptypb.Empty{}, a.gone()
}
func (a *fakeAgent) ResizeTTY(_ context.Context, r *api.ResizeTTYRequest) (*emptypb.Empty, error) {
	a.record("ResizeTTY")
	return &emptypb.Empty{}, a.gone()
}

// fakeMounter records mounts instead of making them (it creates the mount
// points so removal is exercised).
type fakeMounter struct {
	mu      sync.Mutex
	mounted []string
	log     []string
}

func (m *fakeMounter) Rootfs(mounts []mount.Mount, target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounted = append(m.mounted, target)
	m.log = append(m.log, "rootfs "+mounts[0].Type+" "+target)
	return os.MkdirAll(target, 0o755)
}
func (m *fakeMounter) Bind(source, target string, bm bindMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mounted = append(m.mounted, target)
	mode := "rw"
	switch {
	case bm.ReadOnly && bm.Recursive:
		mode = "rro"
	case bm.ReadOnly:
		mode = "ro"
	}
	if bm.Flat {
		mode += " flat"
	}
	m.log = append(m.log, "bind "+source+" "+target+" "+mode)
	return nil
}
func (m *fakeMounter) Unmount(target string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, "unmount "+target)
	return nil
}

// recorder is the event publisher: it records topics and events.
type recorder struct {
	mu     sync.Mutex
	events []any
	notify chan struct{}
	onEvt  func(any)
}

func (r *recorder) Publish(_ context.Context, topic string, e events.Event) error {
	r.mu.Lock()
	hook := r.onEvt
	r.mu.Unlock()
	if hook != nil {
		hook(e)
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

func (r *recorder) snapshot() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.events...)
}

// waitFor blocks until pred holds for the recorded events (or fails the test
// after 10s: a missing event, not a slow one).
func (r *recorder) waitFor(t *testing.T, what string, pred func([]any) bool) []any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		evs := r.snapshot()
		if pred(evs) {
			return evs
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; events: %s", what, describe(evs))
		}
	}
}

// harness is a task service wired to fakes.
type harness struct {
	s     *service
	hv    *fakeHV
	agent *fakeAgent
	mnt   *fakeMounter
	pub   *recorder
	sd    shutdown.Service
	root  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "test")
	ctx, sd := shutdown.WithShutdown(ctx)
	h := &harness{agent: newFakeAgent(t), mnt: &fakeMounter{}, pub: &recorder{notify: make(chan struct{}, 1)}, sd: sd, root: t.TempDir()}
	s, err := newService(ctx, h.pub, sd, Options{
		StateRoot: h.root,
		Drivers: fakeDrivers(func(cfg hypervisor.Config, _ *slog.Logger) (hypervisor.Hypervisor, error) {
			h.hv = &fakeHV{cfg: cfg, done: make(chan struct{})}
			return h.hv, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.dialAgent = func(context.Context, hypervisor.Hypervisor) (*agentConn, error) {
		return &agentConn{sandbox: h.agent, container: h.agent, process: h.agent, close: func() error { h.agent.disconnect(); return nil }, done: h.agent.conn}, nil
	}
	s.mounter = h.mnt
	s.hostRoot = t.TempDir()                                                                      // no /dev/vhost-vsock: virtio-serial, whatever this host has
	s.attachNet = func(string) (*network.Attachment, error) { return &network.Attachment{}, nil } // no NIC
	s.loadConfig = func(string) (config.Config, error) {
		cfg := config.Default()
		cfg.Agent.CallTimeout = config.Duration(5 * time.Second)
		return cfg, nil
	}
	h.s = s
	t.Cleanup(func() {
		sd.Shutdown()
		<-sd.Done()
	})
	return h
}

// bundle writes a bundle whose spec has annotations and mounts.
func bundle(t *testing.T, ann map[string]string, mounts ...specs.Mount) string {
	t.Helper()
	dir := t.TempDir()
	spec := specs.Spec{Version: specs.Version, Hostname: "pod-host", Annotations: ann, Mounts: mounts,
		Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}, Root: &specs.Root{Path: "rootfs"},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/var/run/netns/x"}, {Type: specs.PIDNamespace}}}}
	b, err := json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}
