package network

import (
	"net"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/veil-runtime/veil/guest-agent/api"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ipnet(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func addr(s string) netlink.Addr { return netlink.Addr{IPNet: ipnet(s)} }

func TestSelectInterfaces(t *testing.T) {
	lo := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo", Flags: net.FlagLoopback | net.FlagUp, MTU: 65536}}
	eth0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 3, Name: "eth0", HardwareAddr: mac("0a:58:0a:58:00:05"), MTU: 1500}}
	eth1 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 2, Name: "eth1", HardwareAddr: mac("0a:58:0a:59:00:07"), MTU: 9000}}
	tap := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Index: 4, Name: "veil-tap0", HardwareAddr: mac("02:00:00:00:00:01"), MTU: 1500}}
	ipip := &netlink.Iptun{LinkAttrs: netlink.LinkAttrs{Index: 5, Name: "tunl0", HardwareAddr: net.HardwareAddr{0, 0, 0, 0}, MTU: 1480}}
	tests := []struct {
		name  string
		links []netlink.Link
		addrs map[int][]netlink.Addr
		want  []Interface
	}{
		{
			name:  "only loopback: no interface (host network or CNI not run)",
			links: []netlink.Link{lo},
			addrs: map[int][]netlink.Addr{1: {addr("127.0.0.1/8")}},
		},
		{
			name:  "the CNI veth with IPv4 and IPv6, link-local left out",
			links: []netlink.Link{lo, eth0},
			addrs: map[int][]netlink.Addr{1: {addr("127.0.0.1/8")}, 3: {addr("10.88.0.5/16"), addr("fe80::858:aff:fe58:5/64"), addr("fd00::5/64")}},
			want: []Interface{{Name: "eth0", Index: 3, MAC: mac("0a:58:0a:58:00:05"), MTU: 1500,
				Addrs: []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16"), netip.MustParsePrefix("fd00::5/64")}}},
		},
		{
			name:  "a veth with only a link-local address is not configured yet",
			links: []netlink.Link{eth0},
			addrs: map[int][]netlink.Addr{3: {addr("fe80::1/64")}},
		},
		{
			name:  "taps (our own) and non-Ethernet links are left out; order is by ifindex",
			links: []netlink.Link{eth0, tap, ipip, eth1},
			addrs: map[int][]netlink.Addr{3: {addr("10.88.0.5/16")}, 2: {addr("10.89.0.7/24")}, 4: {addr("10.1.1.1/24")}, 5: {addr("10.2.2.2/24")}},
			want: []Interface{
				{Name: "eth1", Index: 2, MAC: mac("0a:58:0a:59:00:07"), MTU: 9000, Addrs: []netip.Prefix{netip.MustParsePrefix("10.89.0.7/24")}},
				{Name: "eth0", Index: 3, MAC: mac("0a:58:0a:58:00:05"), MTU: 1500, Addrs: []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16")}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SelectInterfaces(tt.links, tt.addrs)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SelectInterfaces = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSelectRoutes(t *testing.T) {
	ifaces := []Interface{{Name: "eth0", Index: 3}}
	gw := net.ParseIP("10.88.0.1")
	tests := []struct {
		name   string
		routes []netlink.Route
		want   []Route
	}{
		{
			name: "bridge plugin: kernel subnet route left out, default via the bridge",
			routes: []netlink.Route{
				{LinkIndex: 3, Dst: ipnet("10.88.0.0/16"), Protocol: unix.RTPROT_KERNEL, Scope: netlink.SCOPE_LINK, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN, Src: net.ParseIP("10.88.0.5")},
				{LinkIndex: 3, Gw: gw, Protocol: unix.RTPROT_BOOT, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
			},
			want: []Route{{Gw: netip.MustParseAddr("10.88.0.1"), Dev: "eth0"}},
		},
		{
			name: "explicit 0.0.0.0/0 is the default route; link routes come first",
			routes: []netlink.Route{
				{LinkIndex: 3, Dst: ipnet("0.0.0.0/0"), Gw: gw, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
				{LinkIndex: 3, Dst: ipnet("10.88.0.1/32"), Scope: netlink.SCOPE_LINK, Src: net.ParseIP("10.88.0.5"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
			},
			want: []Route{
				{Dst: netip.MustParsePrefix("10.88.0.1/32"), Dev: "eth0", Src: netip.MustParseAddr("10.88.0.5"), Scope: uint8(netlink.SCOPE_LINK)},
				{Gw: netip.MustParseAddr("10.88.0.1"), Dev: "eth0"},
			},
		},
		{
			name: "other links, other tables, local routes and IPv6 link-local/multicast are left out",
			routes: []netlink.Route{
				{LinkIndex: 1, Dst: ipnet("127.0.0.0/8"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
				{LinkIndex: 3, Dst: ipnet("10.5.0.0/16"), Gw: gw, Type: unix.RTN_UNICAST, Table: 100},
				{LinkIndex: 3, Dst: ipnet("10.88.0.5/32"), Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_MAIN},
				{LinkIndex: 3, Dst: ipnet("fe80::/64"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
				{LinkIndex: 3, Dst: ipnet("ff00::/8"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
				{LinkIndex: 3, Dst: ipnet("fd00:1::/64"), Gw: net.ParseIP("fd00::1"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
			},
			want: []Route{{Dst: netip.MustParsePrefix("fd00:1::/64"), Gw: netip.MustParseAddr("fd00::1"), Dev: "eth0"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SelectRoutes(tt.routes, ifaces); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SelectRoutes = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSelectNeighbors(t *testing.T) {
	ifaces := []Interface{{Name: "eth0", Index: 3}}
	neighs := []netlink.Neigh{
		{LinkIndex: 3, IP: net.ParseIP("10.88.0.1"), HardwareAddr: mac("aa:bb:cc:dd:ee:01"), State: netlink.NUD_PERMANENT},
		{LinkIndex: 3, IP: net.ParseIP("10.88.0.9"), HardwareAddr: mac("aa:bb:cc:dd:ee:09"), State: netlink.NUD_REACHABLE},
		{LinkIndex: 1, IP: net.ParseIP("127.0.0.2"), HardwareAddr: mac("aa:bb:cc:dd:ee:02"), State: netlink.NUD_PERMANENT},
		{LinkIndex: 3, IP: net.ParseIP("10.88.0.3"), State: netlink.NUD_PERMANENT},
	}
	want := []Neighbor{{IP: netip.MustParseAddr("10.88.0.1"), MAC: mac("aa:bb:cc:dd:ee:01"), Dev: "eth0"}}
	if got := SelectNeighbors(neighs, ifaces); !reflect.DeepEqual(got, want) {
		t.Errorf("SelectNeighbors = %+v, want %+v", got, want)
	}
}

func TestConfigAPI(t *testing.T) {
	c := Config{
		Interfaces: []Interface{{Name: "eth0", Index: 3, MAC: mac("0a:58:0a:58:00:05"), MTU: 1450,
			Addrs: []netip.Prefix{netip.MustParsePrefix("10.88.0.5/16"), netip.MustParsePrefix("fd00::5/64")}}},
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.99.0.0/24"), Dev: "eth0", Src: netip.MustParseAddr("10.88.0.5"), Scope: 253},
			{Gw: netip.MustParseAddr("10.88.0.1"), Dev: "eth0"},
		},
		Neighbors: []Neighbor{{IP: netip.MustParseAddr("10.88.0.1"), MAC: mac("aa:bb:cc:dd:ee:01"), Dev: "eth0"}},
	}
	wantIf := []*api.Interface{{Name: "eth0", HwAddr: "0a:58:0a:58:00:05", Mtu: 1450, Addresses: []*api.IPAddress{
		{Address: "10.88.0.5", PrefixLen: 16}, {Address: "fd00::5", PrefixLen: 64}}}}
	wantRoutes := []*api.Route{
		{Dest: "10.99.0.0/24", Device: "eth0", Source: "10.88.0.5", Scope: 253},
		{Gateway: "10.88.0.1", Device: "eth0"},
	}
	wantNeigh := []*api.Neighbor{{Ip: "10.88.0.1", HwAddr: "aa:bb:cc:dd:ee:01", Device: "eth0"}}
	if got := c.APIInterfaces(); !protoEqual(got, wantIf) {
		t.Errorf("APIInterfaces = %v, want %v", got, wantIf)
	}
	if got := c.APIRoutes(); !protoEqual(got, wantRoutes) {
		t.Errorf("APIRoutes = %v, want %v", got, wantRoutes)
	}
	if got := c.APINeighbors(); !protoEqual(got, wantNeigh) {
		t.Errorf("APINeighbors = %v, want %v", got, wantNeigh)
	}
	if c.Empty() || !(Config{}).Empty() {
		t.Errorf("Empty: %v for a config with an interface, %v for none", c.Empty(), Config{}.Empty())
	}
}

func TestTapName(t *testing.T) {
	for n, want := range map[int]string{0: "veil-tap0", 12: "veil-tap12"} {
		if got := TapName(n); got != want || len(got) > 15 {
			t.Errorf("TapName(%d) = %q, want %q (at most 15 bytes)", n, got, want)
		}
	}
}

// protoEqual compares two lists of messages with proto.Equal.
func protoEqual[M proto.Message](a, b []M) bool {
	return slices.EqualFunc(a, b, func(x, y M) bool { return proto.Equal(x, y) })
}
