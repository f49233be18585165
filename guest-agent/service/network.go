package service

import (
	"context"
	"log/slog"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/network"
)

// networkAPI serves the Network service: the pod's interfaces, routes and
// neighbours, configured in the guest's network namespace (see
// guest-agent/network).
type networkAPI struct {
	g   *network.Guest
	log *slog.Logger
}

var _ api.NetworkService = (*networkAPI)(nil)

// newNetworkAPI serves the guest's own network namespace.
func newNetworkAPI(log *slog.Logger) *networkAPI {
	return &networkAPI{g: network.New(nil), log: log}
}

func (a *networkAPI) UpdateInterface(ctx context.Context, req *api.UpdateInterfaceRequest) (*api.Interface, error) {
	i, err := a.g.UpdateInterface(req.GetInterface())
	if err != nil {
		return nil, rpcErr(err)
	}
	a.log.Info("network interface configured", "name", i.GetName(), "mac", i.GetHwAddr(), "mtu", i.GetMtu(), "addresses", len(i.GetAddresses()))
	return i, nil
}

func (a *networkAPI) UpdateRoutes(ctx context.Context, req *api.UpdateRoutesRequest) (*api.UpdateRoutesResponse, error) {
	routes, err := a.g.UpdateRoutes(req.GetRoutes())
	if err != nil {
		return nil, rpcErr(err)
	}
	a.log.Info("routes replaced", "requested", len(req.GetRoutes()), "now", len(routes))
	return &api.UpdateRoutesResponse{Routes: routes}, nil
}

func (a *networkAPI) AddNeighbors(ctx context.Context, req *api.AddNeighborsRequest) (*emptypb.Empty, error) {
	if err := a.g.AddNeighbors(req.GetNeighbors()); err != nil {
		return nil, rpcErr(err)
	}
	return &emptypb.Empty{}, nil
}

func (a *networkAPI) ListInterfaces(ctx context.Context, req *api.ListInterfacesRequest) (*api.ListInterfacesResponse, error) {
	ifaces, err := a.g.ListInterfaces()
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.ListInterfacesResponse{Interfaces: ifaces}, nil
}

func (a *networkAPI) ListRoutes(ctx context.Context, req *api.ListRoutesRequest) (*api.ListRoutesResponse, error) {
	routes, err := a.g.ListRoutes()
	if err != nil {
		return nil, rpcErr(err)
	}
	return &api.ListRoutesResponse{Routes: routes}, nil
}
