package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/boot"
	"github.com/veil-runtime/veil/guest-agent/containers"
	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/storage"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// fakeRunc runs the spec's process on the host with the stdio go-runc would
// give runc: create starts it waiting on a fifo, as runc init waits on its
// exec fifo, and start releases it. It records the bundles it saw.
type fakeRunc struct {
	containers.Runc

	mu      sync.Mutex
	pids    map[string]int
	fifos   map[string]string
	bundles map[string]string
	kills   []string
}

func (f *fakeRunc) Create(_ context.Context, id, bundle string, opts *runc.CreateOpts) error {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	fifo := filepath.Join(bundle, "exec.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", `read _ < "$0"; exec "$@"`, fifo}, s.Process.Args...)...)
	opts.IO.Set(cmd)
	if err := cmd.Start(); err != nil {
		return err
	}
	_ = opts.IO.(runc.StartCloser).CloseAfterStart()
	f.mu.Lock()
	f.pids[id] = cmd.Process.Pid
	f.fifos[id] = fifo
	f.bundles[id] = string(b)
	f.mu.Unlock()
	return os.WriteFile(opts.PidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
}

func (f *fakeRunc) Start(_ context.Context, id string) error {
	f.mu.Lock()
	fifo := f.fifos[id]
	f.mu.Unlock()
	return os.WriteFile(fifo, []byte("start\n"), 0)
}

// Kill records the call only: the manager sends it after the init has
// exited (and been reaped), when a signal to its pid could reach another
// process.
func (f *fakeRunc) Kill(_ context.Context, id string, sig int, opts *runc.KillOpts) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, fmt.Sprintf("%s %d all=%v", id, sig, opts != nil && opts.All))
	return nil
}

func (f *fakeRunc) Delete(_ context.Context, id string, opts *runc.DeleteOpts) error {
	if opts.Force {
		f.mu.Lock()
		_ = syscall.Kill(f.pids[id], syscall.SIGKILL)
		f.mu.Unlock()
	}
	return nil
}

// fakeSystem records what the Sandbox service asked of the guest.
type fakeSystem struct {
	mu       sync.Mutex
	hostname string
	dns      []string
	sysctls  map[string]string
	mounted  []storage.Plan
	pauses   int
}

func (s *fakeSystem) Mount(p storage.Plan) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mounted = append(s.mounted, p)
	return nil
}

func (s *fakeSystem) Unmount(target string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.mounted {
		if p.Target == target {
			s.mounted = append(s.mounted[:i], s.mounted[i+1:]...)
		}
	}
	return nil
}

func (s *fakeSystem) SetHostname(n string) error { s.hostname = n; return nil }
func (s *fakeSystem) SetDNS(l []string) error    { s.dns = l; return nil }
func (s *fakeSystem) SetSysctls(m map[string]string) error {
	for name := range m {
		if _, err := boot.SysctlPath(name); err != nil {
			return err
		}
	}
	s.sysctls = m
	return nil
}
func (s *fakeSystem) StartPIDNamespace() (string, func(), error) {
	s.pauses++
	return "/proc/4242/ns/pid", func() { s.pauses-- }, nil
}

type fixture struct {
	client   *api.Client
	volumes  string
	system   *fakeSystem
	runc     *fakeRunc
	shared   string
	images   string
	poweroff chan struct{}
}

func serve(t *testing.T) *fixture {
	t.Helper()
	return serveAttest(t, nil)
}

// serveAttest is serve with the agent's confidential state (nil: an
// ordinary pod).
func serveAttest(t *testing.T, st *attest.State) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := reaper.New(log)
	go r.Run(ctx)
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	f := &fakeRunc{pids: map[string]int{}, fifos: map[string]string{}, bundles: map[string]string{}}
	sys := &fakeSystem{}
	var svc *Service
	mgr := containers.New(containers.Config{
		PodPIDNamespace: func() (string, error) { return svc.PodPIDNamespace() },
		NewRunc:         func(string) containers.Runc { return f }, Exits: r, Mounter: sys,
		BundleRoot: filepath.Join(dir, "containers"), SharedDir: shared, CgroupRoot: filepath.Join(dir, "cgroup"), Log: log,
	})
	fx := &fixture{system: sys, runc: f, shared: shared, volumes: filepath.Join(dir, "volumes"), images: filepath.Join(dir, "images"), poweroff: make(chan struct{})}
	svc = New(Config{
		Containers: mgr, System: sys, Version: "test", SharedDir: shared, AgentStart: 1234, Log: log,
		Volumes:    volume.New(fx.volumes),
		PowerOff:   func() { close(fx.poweroff) },
		ImagesRoot: fx.images,
		Attest:     st,
	})
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	svc.Register(srv, "virtio-serial")
	l, err := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { _ = srv.Close() })
	conn, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	fx.client = api.NewClient(conn)
	t.Cleanup(func() { _ = fx.client.Close() })
	return fx
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func TestSandboxServiceOverTTRPC(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	c := fx.client

	chk, err := c.Sandbox.Check(ctx, &api.CheckRequest{})
	if err != nil || chk.Status != api.CheckResponse_SERVING {
		t.Fatalf("Check = %v, %v", chk, err)
	}
	v, err := c.Sandbox.Version(ctx, &api.VersionRequest{})
	if err != nil || v.ApiVersion != APIVersion || v.AgentVersion != "test" {
		t.Fatalf("Version = %v, %v", v, err)
	}
	d, err := c.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
	if err != nil || d.Transport != "virtio-serial" || d.KernelToAgentNs != 1234 || d.Cpus == 0 || d.MemTotalBytes == 0 || d.KernelRelease == "" {
		t.Fatalf("GuestDetails = %v, %v", d, err)
	}

	req := &api.CreateSandboxRequest{
		SandboxId: "pod", Hostname: "pod-host", Dns: []string{"nameserver 10.0.0.1"}, SandboxPidns: true,
		Storages: []*api.Storage{{Driver: "9p", Source: "veilshare"}},
		Sysctls:  map[string]string{"kernel.core_pattern": "|/evil"},
	}
	_, err = c.Sandbox.CreateSandbox(ctx, req)
	wantCode(t, "CreateSandbox with a sysctl that is not namespaced", err, codes.InvalidArgument)
	if fx.system.hostname != "" || len(fx.system.mounted) != 0 || fx.system.pauses != 0 {
		t.Fatalf("a refused CreateSandbox changed the system: %+v", fx.system)
	}
	req.Sysctls = map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 2147483647"}
	if _, err := c.Sandbox.CreateSandbox(ctx, req); err != nil {
		t.Fatal(err)
	}
	if fx.system.hostname != "pod-host" || len(fx.system.dns) != 1 || fx.system.pauses != 1 || !maps.Equal(fx.system.sysctls, req.Sysctls) {
		t.Fatalf("system after CreateSandbox: %+v", fx.system)
	}
	if len(fx.system.mounted) != 1 || fx.system.mounted[0].Target != "/run/veil/shared" || fx.system.mounted[0].FSType != "9p" {
		t.Fatalf("share mount %+v", fx.system.mounted)
	}
	_, err = c.Sandbox.CreateSandbox(ctx, req)
	wantCode(t, "second CreateSandbox", err, codes.AlreadyExists)
	_, err = c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{})
	wantCode(t, "CreateSandbox while created", err, codes.AlreadyExists)
	_, err = c.Sandbox.SetHostname(ctx, &api.SetHostnameRequest{})
	wantCode(t, "empty hostname", err, codes.InvalidArgument)

	if _, err := c.Sandbox.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	if len(fx.system.mounted) != 0 || fx.system.pauses != 0 {
		t.Fatalf("DestroySandbox left mounts %v, pause holders %d", fx.system.mounted, fx.system.pauses)
	}
}

func TestContainerAndProcessServicesOverTTRPC(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	c := fx.client
	if _, err := c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "pod", SandboxPidns: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(fx.shared, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	rootfs := &api.Storage{Driver: "shared", Source: "c1/rootfs"}
	spec := []byte(`{"process":{"args":["/bin/sh","-c","echo hi; echo oops >&2; exit 7"]}}`)

	_, err := c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1", Spec: []byte(`{"process":`), Rootfs: rootfs})
	wantCode(t, "malformed spec", err, codes.InvalidArgument)
	_, err = c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1", Spec: spec, Rootfs: &api.Storage{Driver: "shared", Source: "../../etc"}})
	wantCode(t, "rootfs escaping the share", err, codes.InvalidArgument)
	_, err = c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "nope"})
	wantCode(t, "unknown container", err, codes.NotFound)
	_, err = c.Process.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "nope"})
	wantCode(t, "read from unknown container", err, codes.NotFound)

	created, err := c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1", Spec: spec, Rootfs: rootfs})
	if err != nil {
		t.Fatal(err)
	}
	if created.Pid == 0 {
		t.Fatal("CreateContainer returned pid 0")
	}
	var written specs.Spec
	_ = json.Unmarshal([]byte(fx.runc.bundles["c1"]), &written)
	if ns := written.Linux.Namespaces; len(ns) != 2 || ns[0].Path != "/proc/4242/ns/pid" || ns[1].Type != specs.CgroupNamespace {
		t.Fatalf("container not placed in the sandbox PID namespace: %+v", ns)
	}
	_, err = c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1", Spec: spec, Rootfs: rootfs})
	wantCode(t, "duplicate container", err, codes.AlreadyExists)
	if _, err := c.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}

	w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "c1"})
	if err != nil || w.ExitStatus != 7 || w.ExitedAt == nil {
		t.Fatalf("WaitProcess = %v, %v", w, err)
	}
	for name, read := range map[string]func(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error){
		"hi\n": c.Process.ReadStdout, "oops\n": c.Process.ReadStderr,
	} {
		var got []byte
		for {
			r, err := read(ctx, &api.ReadStreamRequest{ContainerId: "c1", Len: 2})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Data) == 0 {
				break
			}
			if len(r.Data) > 2 {
				t.Fatalf("read returned %d bytes, asked for 2", len(r.Data))
			}
			got = append(got, r.Data...)
		}
		if string(got) != name {
			t.Fatalf("stream read %q, want %q", got, name)
		}
	}
	st, err := c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "c1"})
	if err != nil || st.Status != api.Status_STATUS_STOPPED || st.ExitStatus != 7 {
		t.Fatalf("StateContainer = %v, %v", st, err)
	}
	_, err = c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: []byte(`{"args":["true"]}`)})
	wantCode(t, "exec into stopped container", err, codes.FailedPrecondition)
	_, err = c.Process.ResizeTTY(ctx, &api.ResizeTTYRequest{ContainerId: "c1", Width: 80, Height: 24})
	wantCode(t, "resize without terminal", err, codes.FailedPrecondition)
	_, err = c.Process.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: "c1"})
	wantCode(t, "DeleteProcess of init", err, codes.InvalidArgument)

	if _, err := c.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "c1"})
	wantCode(t, "state after remove", err, codes.NotFound)
}

func TestShutdownStopsContainersThenPowersOff(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(fx.shared, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := fx.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: "c1", Spec: []byte(`{"process":{"args":["/bin/sleep","1000"]}}`),
		Rootfs: &api.Storage{Driver: "shared", Source: "c1/rootfs"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fx.client.Sandbox.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	<-fx.poweroff
	_, err = fx.client.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "c1"})
	wantCode(t, "container after Shutdown", err, codes.NotFound)
}

func TestReadLen(t *testing.T) {
	for in, want := range map[uint32]int{0: defaultRead, 1: 1, 4096: 4096, maxRead: maxRead, maxRead + 1: maxRead, 1 << 31: maxRead} {
		if got := ReadLen(in); got != want {
			t.Errorf("ReadLen(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestPodPIDNamespaceStartsOnDemand(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	if _, err := fx.client.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	if fx.system.pauses != 0 {
		t.Fatal("PID namespace holder started without being asked for")
	}
	for _, id := range []string{"a", "b"} {
		if err := os.MkdirAll(filepath.Join(fx.shared, id, "rootfs"), 0o755); err != nil {
			t.Fatal(err)
		}
		// The CRI asks for the pod's PID namespace with a host path.
		spec := `{"process":{"args":["/bin/sleep","1000"]},"linux":{"namespaces":[{"type":"pid","path":"/proc/99/ns/pid"}]}}`
		if _, err := fx.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
			ContainerId: id, Spec: []byte(spec), Rootfs: &api.Storage{Driver: "shared", Source: id + "/rootfs"},
		}); err != nil {
			t.Fatal(err)
		}
		var written specs.Spec
		_ = json.Unmarshal([]byte(fx.runc.bundles[id]), &written)
		if ns := written.Linux.Namespaces; len(ns) != 2 || ns[0].Path != "/proc/4242/ns/pid" || ns[1].Type != specs.CgroupNamespace {
			t.Fatalf("container %s not in the pod PID namespace: %+v", id, ns)
		}
	}
	if fx.system.pauses != 1 {
		t.Fatalf("%d PID namespace holders, want 1 shared by both containers", fx.system.pauses)
	}
	if _, err := fx.client.Sandbox.DestroySandbox(ctx, &api.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	if fx.system.pauses != 0 {
		t.Fatal("DestroySandbox left the PID namespace holder running")
	}
}
