package shim

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/network"
)

// The pod's network. The first container's spec (the CRI sandbox's) names
// the network namespace containerd made and CNI configured; the shim
// connects its interfaces to taps (shim/network) that become the VM's
// virtio-net cards, and tells the agent to configure the same addresses,
// routes and neighbours in the guest. Three cases:
//
//   - a namespace path with CNI interfaces: one NIC per interface;
//   - a namespace path without (no CNI, e.g. `ctr run`), or a new namespace
//     without a path: no NIC, the containers have the VM's loopback only,
//     as they would in an empty namespace under runc;
//   - no network namespace at all: the pod asked for the host's network
//     (hostNetwork). A VM cannot share the host's network stack, so, as
//     under Kata Containers, the pod gets no NIC (its containers see only
//     the VM's loopback, not the node's interfaces); confidential handlers
//     refuse such a pod.

// hostNetwork reports whether spec asks for the host's network namespace:
// a Linux spec without a network namespace entry.
func hostNetwork(spec *specs.Spec) bool {
	if spec == nil || spec.Linux == nil {
		return true
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return false
		}
	}
	return true
}

// netnsPath is the path of spec's network namespace, "" for none or a new one.
func netnsPath(spec *specs.Spec) string {
	if spec == nil || spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}

// attachNetwork connects the pod's CNI interfaces to taps for the VM. It
// returns nil (no NIC) when the pod has no namespace of its own with CNI
// interfaces, and says so in the log. confidential refuses host-network pods.
func (s *service) attachNetwork(ctx context.Context, spec *specs.Spec, confidential bool) (*network.Attachment, error) {
	if hostNetwork(spec) {
		if confidential {
			return nil, fmt.Errorf("pod uses the host's network (hostNetwork): a confidential pod cannot, since its network must not be the node's; run it without hostNetwork: %w", errdefs.ErrInvalidArgument)
		}
		log.G(ctx).Info("pod uses the host's network (hostNetwork): a VM cannot share it, so the pod VM gets no network card and its containers see only the VM's loopback")
		return nil, nil
	}
	path := netnsPath(spec)
	if path == "" {
		log.G(ctx).Info("pod has a new, empty network namespace: the pod VM gets no network card")
		return nil, nil
	}
	attach := s.attachNet
	if attach == nil {
		attach = network.Attach
	}
	a, err := attach(path)
	if err != nil {
		return nil, err
	}
	if a.Config.Empty() {
		log.G(ctx).WithField("netns", path).Info("pod network namespace has no CNI interface: the pod VM gets no network card")
		return nil, nil
	}
	for i, nic := range a.NICs {
		iface := a.Config.Interfaces[i]
		log.G(ctx).WithFields(log.Fields{
			"netns": path, "interface": iface.Name, "tap": nic.Tap, "mac": nic.MAC.String(), "mtu": iface.MTU, "addresses": fmt.Sprint(iface.Addrs),
		}).Info("pod network: interface connected to the VM through a tap (tc mirred)")
	}
	return a, nil
}

// vmNICs are a's taps as the hypervisor takes them; none for nil.
func vmNICs(a *network.Attachment) []hypervisor.NIC {
	if a == nil {
		return nil
	}
	var nics []hypervisor.NIC
	for _, n := range a.NICs {
		nics = append(nics, hypervisor.NIC{Tap: n.File, MAC: n.MAC})
	}
	return nics
}

// configureGuestNetwork has the agent configure a's interfaces, routes and
// neighbours in the guest.
func configureGuestNetwork(ctx context.Context, n api.NetworkService, a *network.Attachment) error {
	if a == nil {
		return nil
	}
	for _, i := range a.Config.APIInterfaces() {
		if _, err := n.UpdateInterface(ctx, &api.UpdateInterfaceRequest{Interface: i}); err != nil {
			return fmt.Errorf("configuring guest interface %s (%s): %w", i.GetName(), i.GetHwAddr(), errgrpc.ToNative(err))
		}
	}
	if routes := a.Config.APIRoutes(); len(routes) > 0 {
		if _, err := n.UpdateRoutes(ctx, &api.UpdateRoutesRequest{Routes: routes}); err != nil {
			return fmt.Errorf("configuring guest routes: %w", errgrpc.ToNative(err))
		}
	}
	if neighs := a.Config.APINeighbors(); len(neighs) > 0 {
		if _, err := n.AddNeighbors(ctx, &api.AddNeighborsRequest{Neighbors: neighs}); err != nil {
			return fmt.Errorf("adding guest neighbours: %w", errgrpc.ToNative(err))
		}
	}
	return nil
}

// detachNetwork removes the pod's taps and filters; nil is fine.
func detachNetwork(a *network.Attachment) error {
	if a == nil {
		return nil
	}
	return a.Detach()
}

// resolvConf is the CRI's /etc/resolv.conf for the pod (the sandbox spec
// binds it "for VM runtimes to set up the DNS of the pod VM"): its lines
// without comments and blanks, for the guest's own /etc/resolv.conf. nil
// when the spec has none.
func resolvConf(spec *specs.Spec) ([]string, error) {
	if spec == nil {
		return nil, nil
	}
	for _, m := range spec.Mounts {
		if m.Destination != "/etc/resolv.conf" {
			continue
		}
		f, err := os.Open(m.Source)
		if err != nil {
			return nil, fmt.Errorf("reading the pod's resolv.conf: %w", err)
		}
		defer f.Close()
		var lines []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ";") {
				lines = append(lines, l)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading the pod's resolv.conf %s: %w", m.Source, err)
		}
		return lines, nil
	}
	return nil, nil
}
