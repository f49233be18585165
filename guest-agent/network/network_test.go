package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

func TestParseInterface(t *testing.T) {
	good := func() *api.Interface {
		return &api.Interface{Name: "eth0", HwAddr: "0a:58:0a:58:00:05", Mtu: 1500,
			Addresses: []*api.IPAddress{{Address: "10.88.0.5", PrefixLen: 16}, {Address: "fd00::5", PrefixLen: 64}}}
	}
	tests := []struct {
		name    string
		edit    func(*api.Interface)
		wantErr string // empty: valid
	}{
		{"valid", func(*api.Interface) {}, ""},
		{"mtu 0 keeps the NIC's", func(i *api.Interface) { i.Mtu = 0 }, ""},
		{"bad MAC", func(i *api.Interface) { i.HwAddr = "0a:58:zz" }, `hw_addr "0a:58:zz"`},
		{"8-byte MAC", func(i *api.Interface) { i.HwAddr = "00:00:00:00:fe:80:00:00" }, "not an Ethernet MAC"},
		{"empty name", func(i *api.Interface) { i.Name = "" }, `interface name ""`},
		{"long name", func(i *api.Interface) { i.Name = "abcdefghijklmnop" }, `"abcdefghijklmnop"`},
		{"slash in name", func(i *api.Interface) { i.Name = "eth/0" }, `"eth/0"`},
		{"tiny mtu", func(i *api.Interface) { i.Mtu = 10 }, "mtu 10"},
		{"bad address", func(i *api.Interface) { i.Addresses[0].Address = "10.88.0" }, `address "10.88.0"`},
		{"prefix too long", func(i *api.Interface) { i.Addresses[0].PrefixLen = 33 }, "prefix length 33"},
		{"zone", func(i *api.Interface) { i.Addresses[1].Address = "fe80::1%eth0" }, `"fe80::1%eth0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good()
			tt.edit(in)
			got, err := ParseInterface(in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Name != in.Name || got.MAC.String() != in.HwAddr || got.MTU != int(in.Mtu) || fmt.Sprint(got.Addrs) != "[10.88.0.5/16 fd00::5/64]" {
					t.Errorf("ParseInterface = %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("ParseInterface: %v, want an invalid-argument error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseRoutes(t *testing.T) {
	tests := []struct {
		name    string
		in      []*api.Route
		want    string
		wantErr string
	}{
		{"default and link routes", []*api.Route{
			{Dest: "10.99.0.0/24", Device: "eth0", Scope: 253, Source: "10.88.0.5"},
			{Gateway: "10.88.0.1", Device: "eth0"},
		}, "[{10.99.0.0/24 invalid IP eth0 10.88.0.5 link} {invalid Prefix 10.88.0.1 eth0 invalid IP universe}]", ""},
		{"dest masked", []*api.Route{{Dest: "10.99.0.7/24", Device: "eth0"}}, "[{10.99.0.0/24 invalid IP eth0 invalid IP universe}]", ""},
		{"bad dest", []*api.Route{{Dest: "10.99.0.0/40", Device: "eth0"}}, "", `dest 10.99.0.0/40`},
		{"bad gateway", []*api.Route{{Gateway: "gw", Device: "eth0"}}, "", "gateway gw"},
		{"mixed families", []*api.Route{{Dest: "10.0.0.0/8", Gateway: "fd00::1", Device: "eth0"}}, "", "family"},
		{"no device", []*api.Route{{Gateway: "10.88.0.1"}}, "", "device"},
		{"scope too big", []*api.Route{{Device: "eth0", Scope: 300}}, "", "scope 300"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRoutes(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Errorf("ParseRoutes: %v, want an invalid-argument error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got); s != tt.want {
				t.Errorf("ParseRoutes = %s, want %s", s, tt.want)
			}
		})
	}
}

func TestParseNeighbors(t *testing.T) {
	if _, err := ParseNeighbors([]*api.Neighbor{{Ip: "10.88.0.1", HwAddr: "aa:bb:cc:dd:ee:01", Device: "eth0"}}); err != nil {
		t.Errorf("valid neighbour: %v", err)
	}
	for _, n := range []*api.Neighbor{
		{Ip: "10.88.0", HwAddr: "aa:bb:cc:dd:ee:01", Device: "eth0"},
		{Ip: "10.88.0.1", HwAddr: "aa:bb", Device: "eth0"},
		{Ip: "10.88.0.1", HwAddr: "aa:bb:cc:dd:ee:01"},
	} {
		if _, err := ParseNeighbors([]*api.Neighbor{n}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseNeighbors(%v): %v, want invalid argument", n, err)
		}
	}
}

// testNetNS returns a Guest on a throwaway network namespace holding a
// NIC named "nic9" with MAC mac, and removes the namespace when the
// test ends.
func testNetNS(t *testing.T, mac string) *Guest {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the netlink tests need root (CAP_NET_ADMIN)")
	}
	path := filepath.Join(t.TempDir(), "ns")
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		ns.Close()
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("removing network namespace: %v", err)
		}
	})
	hw, _ := net.ParseMAC(mac)
	// A veth pair stands in for the virtio NIC (this host's kernel has no
	// dummy driver); its peer is up so that nic9 has a carrier.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "nic9", HardwareAddr: hw}, PeerName: "peer9"}); err != nil {
		t.Fatal(err)
	}
	peer, err := h.LinkByName("peer9")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return New(h)
}

func TestConfigureNIC(t *testing.T) {
	g := testNetNS(t, "0a:58:0a:58:00:05")
	// A stale address the host did not ask for goes.
	nic, _ := g.h.LinkByName("nic9")
	if err := g.h.AddrAdd(nic, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.9/24"))}); err != nil {
		t.Fatal(err)
	}

	got, err := g.UpdateInterface(&api.Interface{Name: "eth0", HwAddr: "0A:58:0A:58:00:05", Mtu: 1400,
		Addresses: []*api.IPAddress{{Address: "10.88.0.5", PrefixLen: 16}, {Address: "fd00::5", PrefixLen: 64}}})
	if err != nil {
		t.Fatal(err)
	}
	addrs := addrStrings(got)
	if got.Name != "eth0" || got.HwAddr != "0a:58:0a:58:00:05" || got.Mtu != 1400 ||
		!slices.Contains(addrs, "10.88.0.5/16") || !slices.Contains(addrs, "fd00::5/64") || slices.Contains(addrs, "192.0.2.9/24") {
		t.Errorf("UpdateInterface = %v, want eth0 with MTU 1400, 10.88.0.5/16 and fd00::5/64 only", got)
	}
	link, err := g.h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Error("eth0 is not up")
	}

	// Applying the same again changes nothing and fails nothing.
	if _, err := g.UpdateInterface(&api.Interface{Name: "eth0", HwAddr: "0a:58:0a:58:00:05", Mtu: 1400,
		Addresses: []*api.IPAddress{{Address: "10.88.0.5", PrefixLen: 16}}}); err != nil {
		t.Fatalf("second UpdateInterface: %v", err)
	}

	routes, err := g.UpdateRoutes([]*api.Route{
		{Dest: "10.99.0.0/24", Device: "eth0", Scope: uint32(netlink.SCOPE_LINK)},
		{Gateway: "10.88.0.1", Device: "eth0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !hasRoute(routes, "", "10.88.0.1", "eth0") || !hasRoute(routes, "10.99.0.0/24", "", "eth0") {
		t.Errorf("UpdateRoutes = %v, want the default via 10.88.0.1 and 10.99.0.0/24 on eth0", routes)
	}
	// Replacing: the old 10.99.0.0/24 route goes, the kernel's subnet route stays.
	routes, err = g.UpdateRoutes([]*api.Route{{Gateway: "10.88.0.254", Device: "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if hasRoute(routes, "10.99.0.0/24", "", "eth0") || hasRoute(routes, "", "10.88.0.1", "eth0") ||
		!hasRoute(routes, "", "10.88.0.254", "eth0") || !hasRoute(routes, "10.88.0.0/16", "", "eth0") {
		t.Errorf("UpdateRoutes (replace) = %v, want only the new default route besides the kernel's", routes)
	}
	listed, err := g.ListRoutes()
	if err != nil || !hasRoute(listed, "", "10.88.0.254", "eth0") {
		t.Errorf("ListRoutes = %v, %v", listed, err)
	}

	if err := g.AddNeighbors([]*api.Neighbor{{Ip: "10.88.0.1", HwAddr: "aa:bb:cc:dd:ee:01", Device: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	neighs, err := g.h.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(neighs, func(n netlink.Neigh) bool {
		return n.IP.String() == "10.88.0.1" && n.HardwareAddr.String() == "aa:bb:cc:dd:ee:01" && n.State&netlink.NUD_PERMANENT != 0
	}) {
		t.Errorf("neighbours of eth0: %v, want a permanent 10.88.0.1 -> aa:bb:cc:dd:ee:01", neighs)
	}

	ifaces, err := g.ListInterfaces()
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, i := range ifaces {
		names = append(names, i.GetName())
	}
	if slices.Sort(names); !slices.Equal(names, []string{"eth0", "peer9"}) {
		t.Errorf("ListInterfaces = %v, want eth0 and peer9 (loopback left out)", ifaces)
	}
}

func TestUpdateInterfaceErrors(t *testing.T) {
	g := testNetNS(t, "0a:58:0a:58:00:05")
	_, err := g.UpdateInterface(&api.Interface{Name: "eth0", HwAddr: "0a:58:0a:58:00:06"})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "0a:58:0a:58:00:06") || !strings.Contains(err.Error(), "nic9=0a:58:0a:58:00:05") {
		t.Errorf("unknown MAC: %v, want not-found naming the MAC and the NICs there are", err)
	}
	_, err = g.UpdateInterface(&api.Interface{Name: "lo", HwAddr: "0a:58:0a:58:00:05"})
	if !errdefs.IsAlreadyExists(err) {
		t.Errorf("renaming onto lo: %v, want already-exists", err)
	}
	_, err = g.UpdateRoutes([]*api.Route{{Gateway: "10.88.0.1", Device: "eth7"}})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "eth7") {
		t.Errorf("route on a missing device: %v, want not-found naming eth7", err)
	}
	if err := g.AddNeighbors([]*api.Neighbor{{Ip: "10.88.0.1", HwAddr: "aa:bb:cc:dd:ee:01", Device: "eth7"}}); !errdefs.IsNotFound(err) {
		t.Errorf("neighbour on a missing device: %v, want not-found", err)
	}
	if errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a missing device is not a malformed request: %v", err)
	}
}

func addrStrings(i *api.Interface) []string {
	var out []string
	for _, a := range i.GetAddresses() {
		out = append(out, fmt.Sprintf("%s/%d", a.GetAddress(), a.GetPrefixLen()))
	}
	return out
}

func hasRoute(routes []*api.Route, dest, gw, dev string) bool {
	return slices.ContainsFunc(routes, func(r *api.Route) bool {
		return r.GetDest() == dest && r.GetGateway() == gw && r.GetDevice() == dev
	})
}
