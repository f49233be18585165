package service

import (
	"context"
	"errors"
	"io"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/containers"
)

type processAPI struct{ s *Service }

var _ api.ProcessService = (*processAPI)(nil)

// Read sizes: a request for 0 bytes gets up to defaultRead; no reply
// carries more than maxRead (ttrpc messages are limited to 4 MiB).
const (
	defaultRead = 32 << 10
	maxRead     = 1 << 20
)

// ReadLen is how many bytes a ReadStdout/ReadStderr request may get.
func ReadLen(n uint32) int {
	switch {
	case n == 0:
		return defaultRead
	case n > maxRead:
		return maxRead
	}
	return int(n)
}

func (a *processAPI) ExecProcess(ctx context.Context, req *api.ExecProcessRequest) (*api.ExecProcessResponse, error) {
	pid, err := a.s.cfg.Containers.Exec(withoutCancel(ctx), containers.ExecRequest{
		ID: req.GetContainerId(), ExecID: req.GetExecId(), Process: req.GetProcess(),
		Terminal: req.GetTerminal(), Stdin: req.GetStdin(),
		DrainOutput: !a.s.outputReadable(),
	})
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.ExecProcessResponse{Pid: uint32(pid)}, nil
}

func (a *processAPI) WaitProcess(ctx context.Context, req *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	status, at, err := a.s.cfg.Containers.Wait(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.WaitProcessResponse{ExitStatus: uint32(status), ExitedAt: timestamppb.New(at)}, nil
}

func (a *processAPI) SignalProcess(ctx context.Context, req *api.SignalProcessRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Signal(withoutCancel(ctx), req.GetContainerId(), req.GetExecId(), int(req.GetSignal()), req.GetAll()))
}

func (a *processAPI) ResizeTTY(ctx context.Context, req *api.ResizeTTYRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.Resize(req.GetContainerId(), req.GetExecId(), req.GetWidth(), req.GetHeight()))
}

func (a *processAPI) WriteStdin(ctx context.Context, req *api.WriteStdinRequest) (*api.WriteStdinResponse, error) {
	n, err := a.s.cfg.Containers.WriteStdin(ctx, req.GetContainerId(), req.GetExecId(), req.GetData())
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.WriteStdinResponse{Len: uint32(n)}, nil
}

func (a *processAPI) CloseStdin(ctx context.Context, req *api.CloseStdinRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.CloseStdin(req.GetContainerId(), req.GetExecId()))
}

func (a *processAPI) ReadStdout(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return readStream(ctx, a.s.cfg.Containers.ReadStdout, req)
}

func (a *processAPI) ReadStderr(ctx context.Context, req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	return readStream(ctx, a.s.cfg.Containers.ReadStderr, req)
}

// readStream returns data, or empty data at end of stream.
func readStream(ctx context.Context, read func(context.Context, string, string, int) ([]byte, error), req *api.ReadStreamRequest) (*api.ReadStreamResponse, error) {
	data, err := read(ctx, req.GetContainerId(), req.GetExecId(), ReadLen(req.GetLen()))
	if errors.Is(err, io.EOF) {
		return &api.ReadStreamResponse{}, nil
	}
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.ReadStreamResponse{Data: data}, nil
}

func (a *processAPI) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.cfg.Containers.DeleteProcess(req.GetContainerId(), req.GetExecId()))
}
