package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
)

// RuntimeName is the containerd runtime type veil registers as.
const RuntimeName = "io.containerd.veil.v2"

// BinaryOpts are the shim library options veil runs with: no reaper and no
// subreaper, because the QEMU driver waits for its own child (the library's
// reaper would steal QEMU's exit status) and the shim has no other children
// to adopt.
func BinaryOpts(c *shim.Config) {
	c.NoReaper = true
	c.NoSubreaper = true
}

// Manager implements containerd's shim manager (the `start` and `delete`
// actions and -info) for veil.
type Manager struct {
	name      string
	stateRoot string
}

var _ shim.Shim = (*Manager)(nil)

// NewManager returns the manager for runtime name (RuntimeName); stateRoot
// is where pod state lives (DefaultStateRoot when empty).
func NewManager(name, stateRoot string) *Manager {
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	return &Manager{name: name, stateRoot: stateRoot}
}

// Name returns the runtime name.
func (m *Manager) Name() string { return m.name }

// Start is the `start` action: containerd runs it in the new task's bundle.
// A container whose pod already has a shim gets that shim's address; the
// first container of a pod gets a new shim process serving on a new socket.
func (m *Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	spec, err := readSpec(".")
	if err != nil {
		return nil, err
	}
	group := groupID(id, spec.Annotations)
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}

	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	address, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	listener, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			// The pod's shim is running: this container joins it.
			result.Address = address
			return result, nil
		}
		// A stale socket from a dead shim.
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("removing stale shim socket: %w", err)
		}
		if listener, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			listener.Close()
			_ = shim.RemoveSocket(address)
		}
	}()
	f, err := listener.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()

	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting shim process: %w", err)
	}
	go cmd.Wait() //nolint:errcheck // the shim outlives this process
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		// Hosts without CAP_SYS_RESOURCE cannot lower it; not fatal.
		log.G(ctx).WithError(err).Debug("adjusting shim OOM score")
	}
	result.Address = address
	return result, nil
}

// Stop is the `delete` action containerd runs after a shim died without
// deleting task id (cwd is its bundle). It kills the pod's leftover VM when
// id is the pod's sandbox (or a container that was its own pod), undoes the
// host mounts made for id, and removes what is left of its state. The task
// is reported exited with status 255.
func (m *Manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	group := id
	spec, err := readSpec(".")
	if err == nil {
		group = groupID(id, spec.Annotations)
	} else {
		log.G(ctx).WithError(err).Warn("reading bundle spec; assuming the task is its own pod")
	}
	if err := cleanupTask(ctx, m.stateRoot, ns, group, id, hostMounter{}); err != nil {
		log.G(ctx).WithError(err).Warn("cleaning up after shim")
	}
	if spec != nil && id == group {
		// The VM is gone (killed above, or with the shim): its cgroup is empty.
		if err := removeLeftoverCgroup(spec); err != nil {
			log.G(ctx).WithError(err).Warn("cleaning up after shim")
		}
	}
	return shim.StopStatus{ExitStatus: vmGoneStatus, ExitedAt: time.Now()}, nil
}

// cleanupTask undoes what a dead shim left for task id of pod group.
func cleanupTask(ctx context.Context, stateRoot, ns, group, id string, mnt mounter) error {
	stateDir := filepath.Join(stateRoot, ns, group)
	sharedDir := filepath.Join(stateDir, sharedDirName)
	if id != group {
		dir := filepath.Join(sharedDir, id)
		if err := mnt.Unmount(dir); err != nil {
			return err
		}
		return removeUnmounted(dir)
	}
	var errs []error
	if err := killVM(stateDir); err != nil {
		errs = append(errs, err)
	}
	if err := mnt.Unmount(sharedDir); err != nil {
		errs = append(errs, err)
	}
	// The network namespace the shim made for the pod (hooks.go), if any.
	if err := removeNetNS(stateDir + ".netns"); err != nil {
		errs = append(errs, err)
	}
	if err := removeUnmounted(stateDir); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Dir(stateDir)) // the namespace's, once empty
	return errors.Join(errs...)
}

// killVM kills the QEMU process recorded in the state directory, if it
// still runs and is still that VM (its command line names the state
// directory), and waits for it to go.
func killVM(stateDir string) error {
	b, err := os.ReadFile(filepath.Join(stateDir, vmPidFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("reading VM pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("VM pid file %s holds %q", filepath.Join(stateDir, vmPidFile), b)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), stateDir) {
		return nil // gone, or the pid now belongs to something else
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing VM (pid %d): %w", pid, err)
	}
	for range 100 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil {
			return nil
		}
		// The VM is not our child: poll for it to be reaped by its parent.
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("VM (pid %d) still there 5s after SIGKILL", pid)
}

// Info reports the runtime's name, version and OCI features
// (RuntimeFeatures), echoing its options.
func (m *Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{Name: m.name, Version: &types.RuntimeVersion{Version: "veil"}}
	var err error
	if info.Features, err = typeurl.MarshalAnyToProto(RuntimeFeatures()); err != nil {
		return nil, fmt.Errorf("encoding runtime features: %w", err)
	}
	opts, err := shim.ReadRuntimeOptions[*runtimeoptions.Options](optionsR)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("reading runtime options: %w", err)
	}
	if opts != nil {
		if info.Options, err = typeurl.MarshalAnyToProto(opts); err != nil {
			return nil, err
		}
	}
	return info, nil
}
