package api

import (
	"net"
	"net/netip"
)

// PrefixOf converts a net.IPNet (as netlink reports addresses and routes)
// to the prefix IPAddress and Route carry, keeping IPv4 addresses 4 bytes
// long; false for a nil, malformed or non-canonical one. The shim (reading
// the pod's netns) and the agent (reporting the guest's) both use it, so
// the two sides spell addresses alike.
func PrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, bits := n.Mask.Size()
	switch {
	case bits == 0: // not a canonical mask
		return netip.Prefix{}, false
	case ip.Is4() && bits == 128: // a 16-byte mask on an IPv4 address
		ones -= 96
	}
	p := netip.PrefixFrom(ip, ones)
	return p, p.IsValid()
}
