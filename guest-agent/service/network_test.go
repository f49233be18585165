package service

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// TestNetworkServiceOverTTRPC checks the Network service is served and maps
// errors to codes. It only reads the test host's network (the requests it
// sends are refused before anything changes); guest-agent/network's tests
// configure a NIC in a namespace of their own, the VM tier in a real guest.
func TestNetworkServiceOverTTRPC(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	c := fx.client.Network

	_, err := c.UpdateInterface(ctx, &api.UpdateInterfaceRequest{Interface: &api.Interface{Name: "eth0", HwAddr: "not-a-mac"}})
	wantCode(t, "UpdateInterface with a bad MAC", err, codes.InvalidArgument)
	if err == nil || !strings.Contains(err.Error(), "not-a-mac") {
		t.Errorf("UpdateInterface with a bad MAC: %v, want the MAC named", err)
	}
	_, err = c.UpdateInterface(ctx, &api.UpdateInterfaceRequest{Interface: &api.Interface{Name: "eth0", HwAddr: "02:00:5e:ff:ff:fe"}})
	wantCode(t, "UpdateInterface with a MAC no NIC has", err, codes.NotFound)
	_, err = c.UpdateRoutes(ctx, &api.UpdateRoutesRequest{Routes: []*api.Route{{Gateway: "10.0.0.1"}}})
	wantCode(t, "UpdateRoutes without a device", err, codes.InvalidArgument)
	_, err = c.AddNeighbors(ctx, &api.AddNeighborsRequest{Neighbors: []*api.Neighbor{{Ip: "x", HwAddr: "02:00:5e:ff:ff:fe", Device: "eth0"}}})
	wantCode(t, "AddNeighbors with a bad IP", err, codes.InvalidArgument)

	ifaces, err := c.ListInterfaces(ctx, &api.ListInterfacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces.GetInterfaces() {
		if i.GetName() == "lo" {
			t.Errorf("ListInterfaces lists loopback: %v", ifaces)
		}
	}
	if _, err := c.ListRoutes(ctx, &api.ListRoutesRequest{}); err != nil {
		t.Fatal(err)
	}
}
