// Package network configures the guest's network as the host asks through
// the agent API's Network service: it finds a NIC by its MAC (the shim gives
// the VM's virtio-net card the MAC of the pod's veth), names it as the
// interface is named in the pod's namespace, sets its MTU and addresses,
// brings it up, and replaces the routes and adds the static neighbours the
// pod's namespace has. It uses netlink (vishvananda/netlink) on a handle,
// the guest's own namespace in the agent, a throwaway one in tests.
//
// Requests are checked before anything changes: a malformed MAC, name,
// address or route is an invalid-argument error naming the field and value;
// a MAC no NIC has is not-found, naming the NICs there are.
package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Guest configures the network of one namespace. Its methods serialise.
type Guest struct {
	mu sync.Mutex
	h  *netlink.Handle
}

// New returns a Guest working on h; nil means the calling process's namespace.
func New(h *netlink.Handle) *Guest {
	if h == nil {
		h = &netlink.Handle{} // netlink's package handle: the current namespace
	}
	return &Guest{h: h}
}

// Interface is a checked UpdateInterface request.
type Interface struct {
	Name  string
	MAC   net.HardwareAddr
	MTU   int
	Addrs []netip.Prefix
}

// ParseInterface checks an API interface.
func ParseInterface(in *api.Interface) (Interface, error) {
	if in == nil {
		return Interface{}, fmt.Errorf("interface: missing: %w", errdefs.ErrInvalidArgument)
	}
	mac, err := net.ParseMAC(in.GetHwAddr())
	if err != nil || len(mac) != 6 {
		return Interface{}, fmt.Errorf("interface %q: hw_addr %q is not an Ethernet MAC: %w", in.GetName(), in.GetHwAddr(), errdefs.ErrInvalidArgument)
	}
	if err := checkName(in.GetName()); err != nil {
		return Interface{}, err
	}
	if in.GetMtu() != 0 && (in.GetMtu() < 68 || in.GetMtu() > 65535) {
		return Interface{}, fmt.Errorf("interface %s: mtu %d out of range 68-65535: %w", in.GetName(), in.GetMtu(), errdefs.ErrInvalidArgument)
	}
	out := Interface{Name: in.GetName(), MAC: mac, MTU: int(in.GetMtu())}
	for _, a := range in.GetAddresses() {
		ip, err := netip.ParseAddr(a.GetAddress())
		if err != nil || ip.Zone() != "" {
			return Interface{}, fmt.Errorf("interface %s: address %q: %w", in.GetName(), a.GetAddress(), errdefs.ErrInvalidArgument)
		}
		p := netip.PrefixFrom(ip, int(a.GetPrefixLen()))
		if !p.IsValid() || a.GetPrefixLen() > uint32(ip.BitLen()) {
			return Interface{}, fmt.Errorf("interface %s: prefix length %d of %s: %w", in.GetName(), a.GetPrefixLen(), ip, errdefs.ErrInvalidArgument)
		}
		out.Addrs = append(out.Addrs, p)
	}
	return out, nil
}

// checkName refuses what the kernel refuses as an interface name.
func checkName(name string) error {
	if name == "" || len(name) > unix.IFNAMSIZ-1 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("interface name %q: want 1-15 bytes without '/', ':' or spaces: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Route is a checked route.
type Route struct {
	Dst   netip.Prefix // zero: default route
	Gw    netip.Addr
	Dev   string
	Src   netip.Addr
	Scope netlink.Scope
}

// ParseRoutes checks API routes.
func ParseRoutes(in []*api.Route) ([]Route, error) {
	var out []Route
	for i, r := range in {
		bad := func(what string, v any) error {
			return fmt.Errorf("route %d (%s via %q dev %q): %s %v: %w", i, r.GetDest(), r.GetGateway(), r.GetDevice(), what, v, errdefs.ErrInvalidArgument)
		}
		if err := checkName(r.GetDevice()); err != nil {
			return nil, bad("device", err)
		}
		rt := Route{Dev: r.GetDevice(), Scope: netlink.Scope(r.GetScope())}
		if r.GetScope() > 255 {
			return nil, bad("scope", r.GetScope())
		}
		var err error
		if r.GetDest() != "" {
			if rt.Dst, err = netip.ParsePrefix(r.GetDest()); err != nil {
				return nil, bad("dest", r.GetDest())
			}
			rt.Dst = rt.Dst.Masked()
		}
		if r.GetGateway() != "" {
			if rt.Gw, err = netip.ParseAddr(r.GetGateway()); err != nil {
				return nil, bad("gateway", r.GetGateway())
			}
		}
		if r.GetSource() != "" {
			if rt.Src, err = netip.ParseAddr(r.GetSource()); err != nil {
				return nil, bad("source", r.GetSource())
			}
		}
		if rt.Dst.IsValid() && rt.Gw.IsValid() && rt.Dst.Addr().Is4() != rt.Gw.Is4() {
			return nil, bad("gateway family differs from dest", r.GetGateway())
		}
		out = append(out, rt)
	}
	return out, nil
}

// Neighbor is a checked neighbour entry.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	Dev string
}

// ParseNeighbors checks API neighbours.
func ParseNeighbors(in []*api.Neighbor) ([]Neighbor, error) {
	var out []Neighbor
	for i, n := range in {
		ip, err := netip.ParseAddr(n.GetIp())
		if err != nil {
			return nil, fmt.Errorf("neighbour %d: ip %q: %w", i, n.GetIp(), errdefs.ErrInvalidArgument)
		}
		mac, err := net.ParseMAC(n.GetHwAddr())
		if err != nil {
			return nil, fmt.Errorf("neighbour %d (%s): hw_addr %q: %w", i, ip, n.GetHwAddr(), errdefs.ErrInvalidArgument)
		}
		if err := checkName(n.GetDevice()); err != nil {
			return nil, fmt.Errorf("neighbour %d (%s): %w", i, ip, err)
		}
		out = append(out, Neighbor{IP: ip, MAC: mac, Dev: n.GetDevice()})
	}
	return out, nil
}

// UpdateInterface configures the NIC with in's MAC: name, MTU, exactly
// in's addresses (others removed; IPv6 link-local ones are the kernel's and
// stay), up. It returns the interface as it now is.
func (g *Guest) UpdateInterface(in *api.Interface) (*api.Interface, error) {
	want, err := ParseInterface(in)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	link, err := g.linkByMAC(want.MAC)
	if err != nil {
		return nil, err
	}
	if link.Attrs().Name != want.Name {
		if other, err := g.h.LinkByName(want.Name); err == nil && other.Attrs().Index != link.Attrs().Index {
			return nil, fmt.Errorf("renaming %s (%s) to %s: another interface has that name: %w", link.Attrs().Name, want.MAC, want.Name, errdefs.ErrAlreadyExists)
		}
		// A name changes only while the link is down.
		if err := g.h.LinkSetDown(link); err != nil {
			return nil, fmt.Errorf("bringing down %s: %w", link.Attrs().Name, err)
		}
		if err := g.h.LinkSetName(link, want.Name); err != nil {
			return nil, fmt.Errorf("renaming %s to %s: %w", link.Attrs().Name, want.Name, err)
		}
	}
	if want.MTU != 0 && link.Attrs().MTU != want.MTU {
		if err := g.h.LinkSetMTU(link, want.MTU); err != nil {
			return nil, fmt.Errorf("setting MTU %d on %s: %w", want.MTU, want.Name, err)
		}
	}
	have, err := g.h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", want.Name, err)
	}
	for _, a := range have {
		p, ok := api.PrefixOf(a.IPNet)
		if !ok || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) || slices.Contains(want.Addrs, p) {
			continue
		}
		if err := g.h.AddrDel(link, &a); err != nil {
			return nil, fmt.Errorf("removing %s from %s: %w", p, want.Name, err)
		}
	}
	for _, p := range want.Addrs {
		a := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// The address is the pod's, already checked unique on the
			// pod network: usable at once, no duplicate detection.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := g.h.AddrReplace(link, a); err != nil {
			return nil, fmt.Errorf("adding %s to %s: %w", p, want.Name, err)
		}
	}
	if err := g.h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", want.Name, err)
	}
	link, err = g.h.LinkByIndex(link.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("reading %s back: %w", want.Name, err)
	}
	return g.apiInterface(link)
}

// linkByMAC finds the link with mac.
func (g *Guest) linkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := g.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var seen []string
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if slices.Equal(l.Attrs().HardwareAddr, mac) {
			return l, nil
		}
		seen = append(seen, l.Attrs().Name+"="+l.Attrs().HardwareAddr.String())
	}
	return nil, fmt.Errorf("no network interface has MAC %s (have: %s): %w", mac, strings.Join(seen, ", "), errdefs.ErrNotFound)
}

// UpdateRoutes replaces the routes of the main table (all but those the
// kernel made for addresses, on any interface but loopback) with in, added
// in order, and returns the routes now there.
func (g *Guest) UpdateRoutes(in []*api.Route) ([]*api.Route, error) {
	want, err := ParseRoutes(in)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	index := map[string]int{}
	for _, r := range want {
		if _, ok := index[r.Dev]; ok {
			continue
		}
		l, err := g.h.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("route device %s: %w: %w", r.Dev, err, errdefs.ErrNotFound)
		}
		index[r.Dev] = l.Attrs().Index
	}
	have, err := g.h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range have {
		if !replaceable(r) {
			continue
		}
		if err := g.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("removing route %s: %w", r, err)
		}
	}
	for _, r := range want {
		nr := &netlink.Route{LinkIndex: index[r.Dev], Scope: r.Scope}
		if r.Dst.IsValid() {
			nr.Dst = ipNet(r.Dst)
		}
		if r.Gw.IsValid() {
			nr.Gw = net.IP(r.Gw.AsSlice())
		}
		if r.Src.IsValid() {
			nr.Src = net.IP(r.Src.AsSlice())
		}
		if err := g.h.RouteReplace(nr); err != nil {
			return nil, fmt.Errorf("adding route %s via %s dev %s: %w", orDefault(r.Dst), r.Gw, r.Dev, err)
		}
	}
	return g.listRoutes()
}

// replaceable: a route UpdateRoutes removes. The kernel's own routes for
// addresses stay (they come and go with the addresses), as does anything
// on loopback and IPv6 multicast/link-local routes.
func replaceable(r netlink.Route) bool {
	if r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
		return false
	}
	if r.Dst != nil {
		if p, ok := api.PrefixOf(r.Dst); ok && p.Addr().Is6() && (p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast()) {
			return false
		}
	}
	return r.LinkIndex != 1 // lo
}

func orDefault(p netip.Prefix) string {
	if !p.IsValid() {
		return "default"
	}
	return p.String()
}

// AddNeighbors adds (or replaces) permanent neighbour entries.
func (g *Guest) AddNeighbors(in []*api.Neighbor) error {
	want, err := ParseNeighbors(in)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range want {
		l, err := g.h.LinkByName(n.Dev)
		if err != nil {
			return fmt.Errorf("neighbour %s device %s: %w: %w", n.IP, n.Dev, err, errdefs.ErrNotFound)
		}
		family := netlink.FAMILY_V4
		if n.IP.Is6() {
			family = netlink.FAMILY_V6
		}
		err = g.h.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: family, State: netlink.NUD_PERMANENT,
			IP: net.IP(n.IP.AsSlice()), HardwareAddr: n.MAC})
		if err != nil {
			return fmt.Errorf("adding neighbour %s (%s) on %s: %w", n.IP, n.MAC, n.Dev, err)
		}
	}
	return nil
}

// ListInterfaces returns every interface but loopback.
func (g *Guest) ListInterfaces() ([]*api.Interface, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	links, err := g.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []*api.Interface
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		i, err := g.apiInterface(l)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, nil
}

// ListRoutes returns the main table's routes.
func (g *Guest) ListRoutes() ([]*api.Route, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.listRoutes()
}

func (g *Guest) listRoutes() ([]*api.Route, error) {
	routes, err := g.h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	names := map[int]string{}
	var out []*api.Route
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		if _, ok := names[r.LinkIndex]; !ok {
			if l, err := g.h.LinkByIndex(r.LinkIndex); err == nil {
				names[r.LinkIndex] = l.Attrs().Name
			}
		}
		ar := &api.Route{Device: names[r.LinkIndex], Scope: uint32(r.Scope)}
		if p, ok := api.PrefixOf(r.Dst); ok && p.Bits() != 0 {
			ar.Dest = p.String()
		}
		if ip, ok := netip.AddrFromSlice(r.Gw); ok {
			ar.Gateway = ip.Unmap().String()
		}
		if ip, ok := netip.AddrFromSlice(r.Src); ok {
			ar.Source = ip.Unmap().String()
		}
		out = append(out, ar)
	}
	return out, nil
}

func (g *Guest) apiInterface(l netlink.Link) (*api.Interface, error) {
	addrs, err := g.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	out := &api.Interface{Name: l.Attrs().Name, HwAddr: l.Attrs().HardwareAddr.String(), Mtu: uint32(l.Attrs().MTU)}
	for _, a := range addrs {
		if p, ok := api.PrefixOf(a.IPNet); ok {
			out.Addresses = append(out.Addresses, &api.IPAddress{Address: p.Addr().String(), PrefixLen: uint32(p.Bits())})
		}
	}
	return out, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
