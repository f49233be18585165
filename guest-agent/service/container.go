package service

import (
	"context"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/containers"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

type containerAPI struct{ s *Service }

var _ api.ContainerService = (*containerAPI)(nil)

func (a *containerAPI) CreateContainer(ctx context.Context, req *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	storages := make([]storage.Spec, 0, len(req.GetStorages()))
	for _, st := range req.GetStorages() {
		storages = append(storages, StorageSpec(st))
	}
	var devices []containers.DeviceRequest
	for _, d := range req.GetDevices() {
		devices = append(devices, containers.DeviceRequest{ContainerPath: d.GetContainerPath(), Serial: d.GetSerial()})
	}
	pid, err := a.s.cfg.Containers.Create(withoutCancel(ctx), containers.CreateRequest{
		ID:       req.GetContainerId(),
		Spec:     req.GetSpec(),
		Rootfs:   StorageSpec(req.GetRootfs()),
		Storages: storages,
		Terminal: req.GetTerminal(),
		Stdin:    req.GetStdin(),
		Devices:  devices,
		// Decided now: init-data is accepted before any container exists.
		DrainOutput: !a.s.outputReadable(),
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.CreateContainerResponse{Pid: uint32(pid)}, nil
}

func (a *containerAPI) StartContainer(ctx context.Context, req *api.StartContainerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Start(withoutCancel(ctx), req.GetContainerId()))
}

func (a *containerAPI) RemoveContainer(ctx context.Context, req *api.RemoveContainerRequest) (*emptypb.Empty, error) {
	err := a.s.cfg.Containers.Remove(withoutCancel(ctx), req.GetContainerId(), req.GetForce())
	// A guest-pulled rootfs goes with its container, and also when the
	// container was never created (the shim's cleanup after a failed
	// Create that had pulled).
	if (err == nil || errdefs.IsNotFound(err)) && a.s.images != nil {
		if rerr := a.s.images.release(req.GetContainerId()); rerr != nil {
			return nil, rpcErr(rerr)
		}
	}
	if err != nil {
		return nil, rpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

// apiStatus maps a container status to the API's.
func apiStatus(s containers.Status) api.Status {
	switch s {
	case containers.StatusCreated:
		return api.Status_STATUS_CREATED
	case containers.StatusRunning:
		return api.Status_STATUS_RUNNING
	case containers.StatusStopped:
		return api.Status_STATUS_STOPPED
	case containers.StatusPaused:
		return api.Status_STATUS_PAUSED
	}
	return api.Status_STATUS_UNKNOWN
}

func (a *containerAPI) StateContainer(ctx context.Context, req *api.StateContainerRequest) (*api.StateContainerResponse, error) {
	st, err := a.s.cfg.Containers.State(req.GetContainerId())
	if err != nil {
		return nil, rpcErr(err)
	}
	resp := &api.StateContainerResponse{
		ContainerId: req.GetContainerId(),
		Status:      apiStatus(st.Status),
		Pid:         uint32(st.Pid),
		ExitStatus:  uint32(st.ExitStatus),
		Terminal:    st.Terminal,
	}
	if !st.ExitedAt.IsZero() {
		resp.ExitedAt = timestamppb.New(st.ExitedAt)
	}
	return resp, nil
}

func (a *containerAPI) ListPids(ctx context.Context, req *api.ListPidsRequest) (*api.ListPidsResponse, error) {
	pids, err := a.s.cfg.Containers.Pids(ctx, req.GetContainerId())
	if err != nil {
		return nil, rpcErr(err)
	}
	resp := &api.ListPidsResponse{}
	for _, p := range pids {
		resp.Processes = append(resp.Processes, &api.ProcessInfo{Pid: uint32(p.Pid), ExecId: p.ExecID})
	}
	return resp, nil
}

func (a *containerAPI) StatsContainer(ctx context.Context, req *api.StatsContainerRequest) (*api.StatsContainerResponse, error) {
	m, err := a.s.cfg.Containers.Stats(req.GetContainerId())
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.StatsContainerResponse{Metrics: m}, nil
}

func (a *containerAPI) UpdateContainer(ctx context.Context, req *api.UpdateContainerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Update(withoutCancel(ctx), req.GetContainerId(), req.GetResources()))
}

func (a *containerAPI) PauseContainer(ctx context.Context, req *api.PauseContainerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Pause(withoutCancel(ctx), req.GetContainerId()))
}

func (a *containerAPI) ResumeContainer(ctx context.Context, req *api.ResumeContainerRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Resume(withoutCancel(ctx), req.GetContainerId()))
}

func (a *containerAPI) GetOOMEvent(ctx context.Context, req *api.GetOOMEventRequest) (*api.GetOOMEventResponse, error) {
	id, err := a.s.cfg.Containers.OOMEvent(ctx)
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.GetOOMEventResponse{ContainerId: id}, nil
}
