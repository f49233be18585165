package service

import (
	"context"
	"errors"
	"io"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// portForwardAPI serves the PortForward service from the Service's table
// (guest-agent/portfwd); the policy has decided first in a confidential pod.
type portForwardAPI struct{ s *Service }

var _ api.PortForwardService = (*portForwardAPI)(nil)

func (a *portForwardAPI) DialPort(ctx context.Context, req *api.DialPortRequest) (*api.DialPortResponse, error) {
	id, err := a.s.ports.Dial(ctx, req.GetPort())
	if err != nil {
		return nil, rpcErr(err)
	}
	a.s.cfg.Log.Debug("port-forward connection opened", "port", req.GetPort(), "stream", id)
	return &api.DialPortResponse{StreamId: id}, nil
}

func (a *portForwardAPI) ReadPort(ctx context.Context, req *api.ReadPortRequest) (*api.ReadPortResponse, error) {
	data, err := a.s.ports.Read(ctx, req.GetStreamId(), req.GetLen())
	if errors.Is(err, io.EOF) {
		return &api.ReadPortResponse{}, nil
	}
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.ReadPortResponse{Data: data}, nil
}

func (a *portForwardAPI) WritePort(ctx context.Context, req *api.WritePortRequest) (*api.WritePortResponse, error) {
	n, err := a.s.ports.Write(req.GetStreamId(), req.GetData())
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.WritePortResponse{Len: uint32(n)}, nil //nolint:gosec // G115: n <= portfwd.MaxChunk
}

func (a *portForwardAPI) CloseWritePort(ctx context.Context, req *api.ClosePortRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.ports.CloseWrite(req.GetStreamId()))
}

func (a *portForwardAPI) ClosePort(ctx context.Context, req *api.ClosePortRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, rpcErr(a.s.ports.Close(req.GetStreamId()))
}
