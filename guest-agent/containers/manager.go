// Package containers runs the pod's containers in the guest with an OCI
// runtime that has runc's command line (crun or runc). For
// each container it writes an OCI bundle at <BundleRoot>/<id>/ (config.json
// rewritten for the guest, runc's log.json, the pid files of the init and
// exec processes), runs runc create/start/exec through a Runc seam whose
// real implementation is go-runc, learns each process's pid from runc's pid
// file and its exit from the agent's reaper, and keeps each process's
// output in bounded buffers until the host reads it.
//
// stdio: a process's stdout and stderr are pipes (or, with a terminal, the
// pty master, all output on stdout) copied into stream buffers. A process
// counts as finished (Wait returns) only after it has exited and both
// streams have reached end of file in the buffers, so the host that reads
// after Wait gets all output, in order, then EOF. The buffers are bounded;
// a process that writes faster than the host reads blocks on its pipe.
// Output the host may not read (CreateRequest.DrainOutput, decided by the
// caller from the pod's policy when the process is created) is drained
// instead: the copier never stops, only the last DrainTailBytes of each
// stream are kept for the pod owner (OutputTail), reads are refused with
// PermissionDenied, and Wait keeps its meaning (exit, then both pipes at
// EOF).
//
// Errors carry containerd errdefs sentinels (NotFound, AlreadyExists,
// InvalidArgument, FailedPrecondition) for the RPC layer to map.
package containers

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/containerd/errdefs"
	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

// Runc is the part of go-runc's *runc.Runc the agent uses: the seam tests
// replace. Implementations must start the runc process through go-runc's
// Monitor (the reaper) and honour the options as runc would.
type Runc interface {
	Create(ctx context.Context, id, bundle string, opts *runc.CreateOpts) error
	Start(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, spec specs.Process, opts *runc.ExecOpts) error
	Delete(ctx context.Context, id string, opts *runc.DeleteOpts) error
	Kill(ctx context.Context, id string, sig int, opts *runc.KillOpts) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Ps(ctx context.Context, id string) ([]int, error)
	Update(ctx context.Context, id string, resources *specs.LinuxResources) error
}

var _ Runc = (*runc.Runc)(nil)

// Exits tells the manager when a pid exits (the reaper).
type Exits interface {
	Watch(pid int) <-chan reaper.Exit
}

// Mounter mounts storages (storage.Mount and storage.Unmount in the guest).
type Mounter interface {
	Mount(storage.Plan) error
	Unmount(target string) error
}

// SystemMounter mounts for real.
type SystemMounter struct{}

func (SystemMounter) Mount(p storage.Plan) error  { return storage.Mount(p) }
func (SystemMounter) Unmount(target string) error { return storage.Unmount(target) }

// RuncBinary is where the guest image puts runc.
const RuncBinary = "/usr/bin/runc"

// GuestRuntime returns NewRunc for an OCI runtime with runc's command line
// (runc, crun) at binary: the go-runc client for one bundle, the runtime
// logging as JSON into the bundle so its errors can be reported.
func GuestRuntime(binary string) func(bundle string) Runc {
	return func(bundle string) Runc {
		return &runc.Runc{Command: binary, Log: filepath.Join(bundle, "log.json"), LogFormat: runc.JSON}
	}
}

// GuestRunc is GuestRuntime(RuncBinary).
func GuestRunc(bundle string) Runc { return GuestRuntime(RuncBinary)(bundle) }

// Config is what a Manager needs.
type Config struct {
	// NewRunc returns the OCI runtime client for a bundle directory
	// (GuestRuntime; GuestRunc when nil).
	NewRunc func(bundle string) Runc
	Exits   Exits
	Mounter Mounter
	// SpecVersion, when set, replaces the ociVersion of every bundle's
	// config.json (the runtime refuses the host's; boot.OCIRuntimeInfo).
	SpecVersion string
	// BundleRoot holds one bundle directory per container (/run/veil/containers).
	BundleRoot string
	// SharedDir is where "shared" storages are resolved (/run/veil/shared).
	SharedDir string
	// CgroupRoot is the cgroup2 mount (/sys/fs/cgroup).
	CgroupRoot string
	// Confidential hardens every container's spec for a pod whose host is
	// an adversary (harden.go).
	Confidential bool
	// PodPIDNamespace returns the path of the pod's shared PID namespace,
	// starting its holder if needed. It is called for a container whose
	// spec names a PID namespace by path (the CRI's way of asking for the
	// pod's) when none was set with SetPIDNamespace. Nil: such containers
	// get their own PID namespace.
	PodPIDNamespace func() (string, error)
	// FindBlockDevice finds a hot-plugged disk by its serial, waiting until
	// ctx ends for it to appear (nil: FindBlockDevice under SysBlock).
	FindBlockDevice func(ctx context.Context, serial string) (BlockDevice, error)
	// BufferBytes bounds each output stream's buffer.
	BufferBytes int
	Log         *slog.Logger
}

// DefaultBufferBytes bounds each stdout/stderr buffer.
const DefaultBufferBytes = 1 << 20

// DrainTailBytes is how much of each drained stream is kept
// (CreateRequest.DrainOutput, OutputTail).
const DrainTailBytes = 64 << 10

// Manager owns the containers of the sandbox.
type Manager struct {
	cfg Config

	mu         sync.Mutex
	containers map[string]*container
	pidns      string

	oom chan string
}

// New returns a Manager.
func New(cfg Config) *Manager {
	if cfg.FindBlockDevice == nil {
		cfg.FindBlockDevice = func(ctx context.Context, serial string) (BlockDevice, error) {
			return FindBlockDevice(ctx, SysBlock, serial)
		}
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.NewRunc == nil {
		cfg.NewRunc = GuestRunc
	}
	if cfg.Mounter == nil {
		cfg.Mounter = SystemMounter{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, containers: map[string]*container{}, oom: make(chan string, 128)}
}

// SetPIDNamespace makes containers created from now on join the PID
// namespace at path (/proc/<pid>/ns/pid of the sandbox's pause process);
// empty gives each container its own.
func (m *Manager) SetPIDNamespace(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pidns = path
}

// IDs lists the containers.
func (m *Manager) IDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id := range m.containers {
		ids = append(ids, id)
	}
	return ids
}

// get returns a container that has finished creating.
func (m *Manager) get(id string) (*container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	if c.init == nil {
		return nil, fmt.Errorf("container %q is still being created: %w", id, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

// process returns a container's init (execID "") or exec process.
func (m *Manager) process(id, execID string) (*container, *process, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok || p == nil {
		return nil, nil, fmt.Errorf("exec %q in container %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

func (m *Manager) bundle(id string) string {
	return filepath.Join(m.cfg.BundleRoot, id)
}

// removeBundle deletes a bundle directory.
func removeBundle(dir string) {
	_ = os.RemoveAll(dir)
}
