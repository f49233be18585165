package shim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/shim/network"
)

func TestPodNetworkNamespace(t *testing.T) {
	withNS := func(ns ...specs.LinuxNamespace) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: ns}}
	}
	tests := []struct {
		name string
		spec *specs.Spec
		host bool
		path string
	}{
		{"CRI pod: the netns CNI configured", withNS(specs.LinuxNamespace{Type: specs.PIDNamespace}, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/run/netns/cni-1"}), false, "/run/netns/cni-1"},
		{"ctr run: a new empty netns", withNS(specs.LinuxNamespace{Type: specs.NetworkNamespace}), false, ""},
		{"hostNetwork: no network namespace", withNS(specs.LinuxNamespace{Type: specs.PIDNamespace}), true, ""},
		{"no linux section", &specs.Spec{}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hostNetwork(tt.spec); got != tt.host {
				t.Errorf("hostNetwork = %v, want %v", got, tt.host)
			}
			if got := netnsPath(tt.spec); got != tt.path {
				t.Errorf("netnsPath = %q, want %q", got, tt.path)
			}
		})
	}
}

func TestAttachNetworkChoices(t *testing.T) {
	ctx := context.Background()
	attached := 0
	s := &service{attachNet: func(path string) (*network.Attachment, error) {
		attached++
		if path == "/run/netns/empty" {
			return &network.Attachment{NetNS: path}, nil
		}
		return &network.Attachment{NetNS: path, Config: network.Config{Interfaces: []network.Interface{{Name: "eth0"}}},
			NICs: []network.NIC{{Tap: "veil-tap0", Veth: "eth0"}}}, nil
	}}
	host := &specs.Spec{Linux: &specs.Linux{}}
	if a, err := s.attachNetwork(ctx, host, false); a != nil || err != nil {
		t.Errorf("host network under veil: %v, %v; want no NIC, no error", a, err)
	}
	_, err := s.attachNetwork(ctx, host, true)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "hostNetwork") {
		t.Errorf("host network under a confidential handler: %v, want an invalid-argument error naming hostNetwork", err)
	}
	if attached != 0 {
		t.Errorf("host-network pods attached %d namespaces", attached)
	}
	ns := func(p string) *specs.Spec {
		return &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: p}}}}
	}
	if a, err := s.attachNetwork(ctx, ns("/run/netns/empty"), false); a != nil || err != nil {
		t.Errorf("namespace without CNI interface: %v, %v; want no NIC", a, err)
	}
	a, err := s.attachNetwork(ctx, ns("/run/netns/cni-1"), true)
	if err != nil || a == nil || len(vmNICs(a)) != 1 {
		t.Errorf("CNI namespace: %+v, %v; want one NIC", a, err)
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte("# from CRI\nsearch veil-e2e.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\n\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/shm", Source: "/x"}, {Destination: "/etc/resolv.conf", Source: p, Type: "bind"}}}
	got, err := resolvConf(spec)
	want := []string{"search veil-e2e.svc.cluster.local svc.cluster.local", "nameserver 10.96.0.10", "options ndots:5"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("resolvConf = %q, %v; want %q", got, err, want)
	}
	if got, err := resolvConf(&specs.Spec{}); got != nil || err != nil {
		t.Errorf("resolvConf without the mount = %q, %v; want nothing", got, err)
	}
	spec.Mounts[1].Source = filepath.Join(dir, "missing")
	if _, err := resolvConf(spec); err == nil || !strings.Contains(err.Error(), "resolv.conf") {
		t.Errorf("resolvConf of a missing file: %v, want an error naming it", err)
	}
}

// fakeNetwork records the agent's Network calls.
type fakeNetwork struct {
	api.NetworkService
	calls []string
	fail  string
}

func (f *fakeNetwork) UpdateInterface(_ context.Context, r *api.UpdateInterfaceRequest) (*api.Interface, error) {
	f.calls = append(f.calls, "UpdateInterface "+r.GetInterface().GetName()+" "+r.GetInterface().GetHwAddr())
	if f.fail == "UpdateInterface" {
		return nil, errgrpc.ToGRPC(fmt.Errorf("no NIC with that MAC: %w", errdefs.ErrNotFound)) // as it comes over ttrpc
	}
	return r.GetInterface(), nil
}

func (f *fakeNetwork) UpdateRoutes(_ context.Context, r *api.UpdateRoutesRequest) (*api.UpdateRoutesResponse, error) {
	f.calls = append(f.calls, "UpdateRoutes "+r.GetRoutes()[0].GetGateway())
	return &api.UpdateRoutesResponse{Routes: r.GetRoutes()}, nil
}

func (f *fakeNetwork) AddNeighbors(_ context.Context, r *api.AddNeighborsRequest) (*emptypb.Empty, error) {
	f.calls = append(f.calls, "AddNeighbors "+r.GetNeighbors()[0].GetIp())
	return &emptypb.Empty{}, nil
}

func TestConfigureGuestNetwork(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:58:00:05")
	a := &network.Attachment{Config: network.Config{
		Interfaces: []network.Interface{{Name: "eth0", MAC: mac, MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16")}}},
		Routes:     []network.Route{{Gw: netip.MustParseAddr("10.88.0.1"), Dev: "eth0"}},
		Neighbors:  []network.Neighbor{{IP: netip.MustParseAddr("10.88.0.1"), MAC: mac, Dev: "eth0"}},
	}}
	f := &fakeNetwork{}
	if err := configureGuestNetwork(context.Background(), f, a); err != nil {
		t.Fatal(err)
	}
	want := []string{"UpdateInterface eth0 0a:58:0a:58:00:05", "UpdateRoutes 10.88.0.1", "AddNeighbors 10.88.0.1"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("agent calls %q, want %q (interfaces before routes before neighbours)", f.calls, want)
	}
	f = &fakeNetwork{fail: "UpdateInterface"}
	err := configureGuestNetwork(context.Background(), f, a)
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "eth0") || len(f.calls) != 1 {
		t.Errorf("failing UpdateInterface: %v after %q, want a not-found error naming eth0 and no further call", err, f.calls)
	}
	if err := configureGuestNetwork(context.Background(), &fakeNetwork{}, nil); err != nil {
		t.Errorf("no network: %v", err)
	}
}
