package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

type sandboxAPI struct {
	s         *Service
	transport string
}

var _ api.SandboxService = (*sandboxAPI)(nil)

// StorageSpec converts an API Storage.
func StorageSpec(st *api.Storage) storage.Spec {
	if st == nil {
		return storage.Spec{}
	}
	return storage.Spec{Driver: st.GetDriver(), Source: st.GetSource(), MountPoint: st.GetMountPoint(), FSType: st.GetFstype(), Options: st.GetOptions()}
}

func (a *sandboxAPI) CreateSandbox(ctx context.Context, req *api.CreateSandboxRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.createSandbox(req))
}

func (s *Service) createSandbox(req *api.CreateSandboxRequest) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.created {
		return fmt.Errorf("sandbox already created; destroy it first: %w", errdefs.ErrAlreadyExists)
	}
	// First: a refused sysctl leaves everything as it was.
	if len(req.GetSysctls()) > 0 {
		if err := s.cfg.System.SetSysctls(req.GetSysctls()); err != nil {
			return fmt.Errorf("pod sysctls: %w", err)
		}
	}
	if req.GetHostname() != "" {
		if err := s.cfg.System.SetHostname(req.GetHostname()); err != nil {
			return err
		}
	}
	if len(req.GetDns()) > 0 {
		if err := s.cfg.System.SetDNS(req.GetDns()); err != nil {
			return err
		}
	}
	var mounted []string
	defer func() {
		if err != nil {
			s.unmount(mounted)
		}
	}()
	for _, st := range req.GetStorages() {
		plan, err := storage.PlanMount(StorageSpec(st), s.cfg.SharedDir)
		if err != nil {
			return fmt.Errorf("sandbox storage: %w", err)
		}
		if err := s.cfg.System.Mount(plan); err != nil {
			return fmt.Errorf("sandbox storage: %w", err)
		}
		mounted = append(mounted, plan.Target)
	}
	if req.GetSandboxPidns() {
		if _, err := s.podPIDNamespace(); err != nil {
			return err
		}
	}
	s.mounts = mounted
	s.created = true
	s.cfg.Log.Info("sandbox created", "id", req.GetSandboxId(), "storages", len(mounted), "pidns", req.GetSandboxPidns(), "sysctls", len(req.GetSysctls()))
	return nil
}

// PodPIDNamespace returns the pod's shared PID namespace, starting its
// holder on first use (containers.Config.PodPIDNamespace).
func (s *Service) PodPIDNamespace() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.podPIDNamespace()
}

func (s *Service) podPIDNamespace() (string, error) {
	if s.pidns != "" {
		return s.pidns, nil
	}
	path, stop, err := s.cfg.System.StartPIDNamespace()
	if err != nil {
		return "", fmt.Errorf("starting the pod PID namespace: %w", err)
	}
	s.pidns, s.stopPause = path, stop
	s.cfg.Containers.SetPIDNamespace(path)
	return path, nil
}

func (s *Service) unmount(targets []string) {
	for i := len(targets) - 1; i >= 0; i-- {
		if err := s.cfg.System.Unmount(targets[i]); err != nil {
			s.cfg.Log.Warn("unmounting sandbox storage", "path", targets[i], "err", err)
		}
	}
}

func (a *sandboxAPI) DestroySandbox(ctx context.Context, req *api.DestroySandboxRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.destroySandbox(withoutCancel(ctx)))
}

// destroySandbox stops every container and undoes CreateSandbox.
func (s *Service) destroySandbox(ctx context.Context) error {
	s.ports.CloseAll(false)
	err := s.cfg.Containers.RemoveAll(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopPause != nil {
		s.stopPause()
		s.stopPause, s.pidns = nil, ""
		s.cfg.Containers.SetPIDNamespace("")
	}
	s.unmount(s.mounts)
	s.mounts = nil
	s.created = false
	if err != nil {
		return fmt.Errorf("stopping containers: %w", err)
	}
	return nil
}

func (a *sandboxAPI) SetHostname(ctx context.Context, req *api.SetHostnameRequest) (*emptypb.Empty, error) {
	if req.GetHostname() == "" {
		return nil, rpcErr(fmt.Errorf("empty hostname: %w", errdefs.ErrInvalidArgument))
	}
	return &emptypb.Empty{}, rpcErr(a.s.cfg.System.SetHostname(req.GetHostname()))
}

func (a *sandboxAPI) SetDNS(ctx context.Context, req *api.SetDNSRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.System.SetDNS(req.GetDns()))
}

func (a *sandboxAPI) GuestDetails(ctx context.Context, req *api.GuestDetailsRequest) (*api.GuestDetailsResponse, error) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	var si unix.Sysinfo_t
	_ = unix.Sysinfo(&si)
	cg := uint32(1)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg = 2
	}
	return &api.GuestDetailsResponse{
		KernelRelease:   unix.ByteSliceToString(uts.Release[:]),
		MemTotalBytes:   uint64(si.Totalram) * uint64(si.Unit),
		Cpus:            uint32(runtime.NumCPU()),
		AgentVersion:    a.s.cfg.Version,
		Transport:       a.transport,
		KernelToAgentNs: uint64(a.s.cfg.AgentStart),
		KernelToReadyNs: uint64(a.s.cfg.Ready()),
		CgroupVersion:   cg,
	}, nil
}

func (a *sandboxAPI) Check(ctx context.Context, req *api.CheckRequest) (*api.CheckResponse, error) {
	return &api.CheckResponse{Status: api.CheckResponse_SERVING}, nil
}

func (a *sandboxAPI) Version(ctx context.Context, req *api.VersionRequest) (*api.VersionResponse, error) {
	return &api.VersionResponse{AgentVersion: a.s.cfg.Version, ApiVersion: APIVersion}, nil
}

// shutdownWait bounds how long Shutdown waits for containers to stop.
const shutdownWait = 20 * time.Second

func (a *sandboxAPI) Shutdown(ctx context.Context, req *api.ShutdownRequest) (*emptypb.Empty, error) {
	ctx, cancel := context.WithTimeout(withoutCancel(ctx), shutdownWait)
	defer cancel()
	a.s.ports.CloseAll(true)
	if err := a.s.destroySandbox(ctx); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		// Power off regardless: the host asked for it.
		a.s.cfg.Log.Warn("stopping the sandbox before power-off", "err", err)
	}
	unix.Sync()
	a.s.cfg.PowerOff()
	return &emptypb.Empty{}, nil
}
