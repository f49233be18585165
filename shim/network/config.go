package network

import (
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Interface is one CNI interface of the pod's namespace, as the guest gets it.
type Interface struct {
	// Name is the interface's name, in the namespace and in the guest ("eth0").
	Name string
	// Index is its ifindex in the namespace.
	Index int
	// MAC is the veth's hardware address, which the guest NIC carries.
	MAC   net.HardwareAddr
	MTU   int
	Addrs []netip.Prefix
}

// Route is a route through one of the interfaces.
type Route struct {
	// Dst is the destination; the zero Prefix is the default route.
	Dst netip.Prefix
	// Gw is the gateway; the zero Addr for a directly connected route.
	Gw netip.Addr
	// Dev is the interface's name.
	Dev string
	// Src is the preferred source address, or the zero Addr.
	Src   netip.Addr
	Scope uint8
}

// Neighbor is a static neighbour (ARP/NDP) entry on one of the interfaces.
type Neighbor struct {
	IP  netip.Addr
	MAC net.HardwareAddr
	Dev string
}

// Config is the network a pod's guest gets: the namespace's CNI interfaces,
// their routes and neighbours.
type Config struct {
	Interfaces []Interface
	Routes     []Route
	Neighbors  []Neighbor
}

// Empty reports whether there is no interface to give the guest.
func (c Config) Empty() bool { return len(c.Interfaces) == 0 }

// TapName is the name of the tap created for the n-th interface. Kernel
// interface names have at most 15 bytes.
func TapName(n int) string { return "veil-tap" + strconv.Itoa(n) }

// SelectInterfaces returns the links that are CNI interfaces the guest
// should get, with their addresses, in ifindex order: Ethernet links (a
// 6-byte MAC) other than loopback and tun/tap devices (taps are the
// shim's own), with at least one address that is not link-local. addrs maps
// an ifindex to the link's addresses.
func SelectInterfaces(links []netlink.Link, addrs map[int][]netlink.Addr) []Interface {
	var out []Interface
	for _, l := range links {
		a := l.Attrs()
		if a == nil || a.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" || len(a.HardwareAddr) != 6 {
			continue
		}
		var prefixes []netip.Prefix
		for _, ad := range addrs[a.Index] {
			p, ok := api.PrefixOf(ad.IPNet)
			if !ok || p.Addr().IsLinkLocalUnicast() {
				continue
			}
			prefixes = append(prefixes, p)
		}
		if len(prefixes) == 0 {
			continue
		}
		out = append(out, Interface{Name: a.Name, Index: a.Index, MAC: slices.Clone(a.HardwareAddr), MTU: a.MTU, Addrs: prefixes})
	}
	slices.SortFunc(out, func(x, y Interface) int { return x.Index - y.Index })
	return out
}

// SelectRoutes returns the routes of the main table through ifaces that the
// guest needs, directly connected routes before routes through a gateway
// (a gateway must be reachable when its route is added). Left out: routes
// the guest kernel makes itself when the addresses are set (protocol
// kernel), IPv6 link-local and multicast routes, and local/broadcast ones.
func SelectRoutes(routes []netlink.Route, ifaces []Interface) []Route {
	names := map[int]string{}
	for _, i := range ifaces {
		names[i.Index] = i.Name
	}
	var link, via []Route
	for _, r := range routes {
		dev, ok := names[r.LinkIndex]
		if !ok || r.Protocol == unix.RTPROT_KERNEL || r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		out := Route{Dev: dev, Scope: uint8(r.Scope)}
		if r.Dst != nil {
			p, ok := api.PrefixOf(r.Dst)
			if !ok {
				continue
			}
			if p.Addr().Is6() && (p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast()) {
				continue
			}
			// A default route may come with an explicit 0.0.0.0/0 or ::/0.
			if p.Bits() != 0 {
				out.Dst = p
			}
		}
		if ip, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
			out.Gw = ip.Unmap()
		}
		if ip, ok := netip.AddrFromSlice(r.Src); ok && r.Src != nil {
			out.Src = ip.Unmap()
		}
		if out.Gw.IsValid() {
			via = append(via, out)
		} else {
			link = append(link, out)
		}
	}
	return append(link, via...)
}

// SelectNeighbors returns the permanent neighbour entries on ifaces (what
// CNI plugins add on purpose; learned entries the guest learns itself).
func SelectNeighbors(neighs []netlink.Neigh, ifaces []Interface) []Neighbor {
	names := map[int]string{}
	for _, i := range ifaces {
		names[i.Index] = i.Name
	}
	var out []Neighbor
	for _, n := range neighs {
		dev, ok := names[n.LinkIndex]
		if !ok || n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) == 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		out = append(out, Neighbor{IP: ip.Unmap(), MAC: slices.Clone(n.HardwareAddr), Dev: dev})
	}
	return out
}

// APIInterfaces is c's interfaces as the agent API's UpdateInterface takes them.
func (c Config) APIInterfaces() []*api.Interface {
	var out []*api.Interface
	for _, i := range c.Interfaces {
		ai := &api.Interface{Name: i.Name, HwAddr: i.MAC.String(), Mtu: uint32(i.MTU)}
		for _, p := range i.Addrs {
			ai.Addresses = append(ai.Addresses, &api.IPAddress{Address: p.Addr().String(), PrefixLen: uint32(p.Bits())})
		}
		out = append(out, ai)
	}
	return out
}

// APIRoutes is c's routes as the agent API's UpdateRoutes takes them.
func (c Config) APIRoutes() []*api.Route {
	var out []*api.Route
	for _, r := range c.Routes {
		ar := &api.Route{Device: r.Dev, Scope: uint32(r.Scope)}
		if r.Dst.IsValid() {
			ar.Dest = r.Dst.String()
		}
		if r.Gw.IsValid() {
			ar.Gateway = r.Gw.String()
		}
		if r.Src.IsValid() {
			ar.Source = r.Src.String()
		}
		out = append(out, ar)
	}
	return out
}

// APINeighbors is c's neighbours as the agent API's AddNeighbors takes them.
func (c Config) APINeighbors() []*api.Neighbor {
	var out []*api.Neighbor
	for _, n := range c.Neighbors {
		out = append(out, &api.Neighbor{Ip: n.IP.String(), HwAddr: n.MAC.String(), Device: n.Dev})
	}
	return out
}
