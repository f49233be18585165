package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/shim/metrics"
	"github.com/veil-runtime/veil/shim/network"
)

var (
	_ taskAPI.TTRPCTaskService = (*service)(nil)
	_ shim.TTRPCService        = (*service)(nil)
)

// service is the task service of one pod's shim.
type service struct {
	// ctx lives as long as the shim; it carries the shim's logger.
	ctx       context.Context
	namespace string
	stateRoot string
	sd        shutdown.Service
	events    chan any
	// done is closed when the shim shuts down; forwarded when the forwarder
	// has published the last event.
	done      <-chan struct{}
	forwarded chan struct{}

	// drivers has the hypervisor drivers; the handler's config names one
	// (hypervisor.driver).
	drivers    *hypervisor.Registry
	dialAgent  func(context.Context, hypervisor.Hypervisor) (*agentConn, error)
	mounter    mounter
	loadConfig func(path string) (config.Config, error)
	// attachNet connects a pod netns to taps (network.Attach when nil).
	attachNet func(netnsPath string) (*network.Attachment, error)
	// metrics are served on the pod's metrics socket (shim/metrics).
	metrics *metrics.Pod
	// newCgroup creates the pod VM's host cgroup (cgroups.go).
	newCgroup newPodCgroup
	// hostRoot is where host devices are looked up ("/"; tests use a
	// temporary root): /dev/vhost-vsock decides the agent transport.
	hostRoot string
	// cids allocates guest CIDs for the vsock transport (vsockcid.go).
	cids *cidAllocator
	// hostBlockPath finds the host node of a block device by number
	// (blockdev.go).
	hostBlockPath func(major, minor int64) (string, error)

	// createMu serialises Create, so the first one alone boots the VM.
	createMu sync.Mutex
	// exitMu orders a process's exit (state change + TaskExit) against
	// Delete (state check + TaskDelete).
	exitMu sync.Mutex

	mu         sync.Mutex
	pod        *pod
	containers map[string]*container
	// podNetNS is the network namespace the shim created for a pod whose
	// spec asked for a new one without a path (hooks.go); "" when none.
	podNetNS string
}

// Options configure a task service.
type Options struct {
	// Drivers are the hypervisor drivers the handler's config
	// (hypervisor.driver) chooses from; nil means hypervisor.Drivers, which
	// the drivers the binary imports register with.
	Drivers *hypervisor.Registry
	// StateRoot is where pod state directories go (DefaultStateRoot when empty).
	StateRoot string
}

// NewTaskService returns the task service the shim library serves; ctx is
// the shim's (its namespace and logger), publisher and sd the library's.
func NewTaskService(ctx context.Context, publisher events.Publisher, sd shutdown.Service, opts Options) (taskAPI.TTRPCTaskService, error) {
	return newService(ctx, publisher, sd, opts)
}

func newService(ctx context.Context, publisher events.Publisher, sd shutdown.Service, opts Options) (*service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	drivers := opts.Drivers
	if drivers == nil {
		drivers = &hypervisor.Drivers
	}
	if len(drivers.Names()) == 0 {
		return nil, fmt.Errorf("no hypervisor driver is registered (import one, e.g. hypervisor/qemu): %w", errdefs.ErrInvalidArgument)
	}
	root := opts.StateRoot
	if root == "" {
		root = DefaultStateRoot
	}
	s := &service{
		ctx:        ctx,
		namespace:  ns,
		stateRoot:  root,
		sd:         sd,
		events:     make(chan any, 128),
		done:       sd.Done(),
		forwarded:  make(chan struct{}),
		drivers:    drivers,
		mounter:    hostMounter{},
		loadConfig: config.Load,
		newCgroup:  newHostCgroup,
		hostRoot:   "/",
		cids:       &cidAllocator{dir: filepath.Join(root, vsockDirName), inUse: vhostVsockInUse(vhostVsockDev)},
		hostBlockPath: func(major, minor int64) (string, error) {
			return hostBlockPath(sysDevBlock, devDir, major, minor)
		},
		containers: make(map[string]*container),
	}
	if s.metrics, err = s.newMetrics(); err != nil {
		return nil, err
	}
	s.dialAgent = s.dialMetered
	// When the shim is told to exit (SIGTERM, or Shutdown), leave no VM,
	// mount or state directory behind.
	sd.RegisterCallback(func(ctx context.Context) error {
		p, _ := s.takePod(false)
		if p == nil {
			return nil
		}
		return s.teardownPod(ctx, p, false)
	})
	go s.forward(ctx, publisher)
	return s, nil
}

// RegisterTTRPC serves the task API (containerd.task.v3.Task).
func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// lookup finds a container and one of its processes.
func (s *service) lookup(id, execID string) (*container, *process, error) {
	s.mu.Lock()
	c := s.containers[id]
	s.mu.Unlock()
	if c == nil {
		return nil, nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	p := c.process(execID)
	if p == nil {
		return nil, nil, fmt.Errorf("exec %s in container %s: %w", execID, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

// currentPod returns the pod VM, or an error when there is none yet.
func (s *service) currentPod() (*pod, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pod == nil {
		return nil, fmt.Errorf("no pod VM: %w", errdefs.ErrFailedPrecondition)
	}
	return s.pod, nil
}

// logCtx adds the pod and container to the request's logger.
func (s *service) logCtx(ctx context.Context, id, execID string) context.Context {
	s.mu.Lock()
	pod := ""
	if s.pod != nil {
		pod = s.pod.id
	}
	s.mu.Unlock()
	fields := log.Fields{"container": id}
	if pod != "" {
		fields["pod"] = pod
	}
	if execID != "" {
		fields["exec"] = execID
	}
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields))
}

func shimPid() uint32 { return uint32(os.Getpid()) }
