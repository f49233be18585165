package shim

import (
	"context"
	"fmt"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// State reports a process as the shim tracks it.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, pr, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, pid, status, at := pr.state()
	return &taskAPI.StateResponse{
		ID:         r.ID,
		ExecID:     r.ExecID,
		Bundle:     c.bundle,
		Pid:        pid,
		Status:     st,
		Stdin:      pr.stdio.stdin,
		Stdout:     pr.stdio.stdout,
		Stderr:     pr.stdio.stderr,
		Terminal:   pr.stdio.terminal,
		ExitStatus: status,
		ExitedAt:   protobuf.ToTimestamp(at),
	}, nil
}

// Pids lists the container's processes in the guest (guest pids), marking
// exec processes with their exec ID. The sandbox's one process is the VM.
func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if c.sandbox {
		_, pid, _, _ := c.init.state()
		return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: pid}}}, nil
	}
	p, err := s.currentPod()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	resp, err := p.agent.container.ListPids(cctx, &api.ListPidsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, errgrpc.ToGRPC(p.agentError("listing processes in the guest", err))
	}
	procs := make([]*task.ProcessInfo, 0, len(resp.GetProcesses()))
	for _, gp := range resp.GetProcesses() {
		info := &task.ProcessInfo{Pid: gp.GetPid()}
		if gp.GetExecId() != "" {
			a, err := typeurl.MarshalAnyToProto(&options.ProcessDetails{ExecID: gp.GetExecId()})
			if err != nil {
				return nil, errgrpc.ToGRPC(fmt.Errorf("encoding process details: %w", err))
			}
			info.Info = a
		}
		procs = append(procs, info)
	}
	return &taskAPI.PidsResponse{Processes: procs}, nil
}

// Stats returns the container's cgroup v2 metrics as the guest measured
// them (the agent's Any, io.containerd.cgroups.v2.Metrics, passed through).
// The sandbox has no cgroup of its own in the guest: it reports empty
// metrics.
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if c.sandbox {
		a, err := typeurl.MarshalAnyToProto(&stats.Metrics{})
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return &taskAPI.StatsResponse{Stats: a}, nil
	}
	p, err := s.currentPod()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	resp, err := p.agent.container.StatsContainer(cctx, &api.StatsContainerRequest{ContainerId: r.ID})
	if err != nil {
		return nil, errgrpc.ToGRPC(p.agentError("reading container stats in the guest", err))
	}
	return &taskAPI.StatsResponse{Stats: resp.GetMetrics()}, nil
}

// Connect reports the shim's pid and the container's (guest, or for the
// sandbox the VM's) pid.
func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if c, _, err := s.lookup(r.ID, ""); err == nil {
		_, pid, _, _ = c.init.state()
	}
	return &taskAPI.ConnectResponse{ShimPid: shimPid(), TaskPid: pid}, nil
}
