package network

import (
	"github.com/veil-runtime/veil/internal/netnstest"

	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newNetNS creates a network namespace pinned on a file in the test's
// temporary directory and removes it when the test ends.
func newNetNS(t *testing.T, name string) string {
	t.Helper()
	return netnstest.New(t, name, false)
}

// do runs fn with a netlink handle in the namespace at path.
func do(t *testing.T, path string, fn func(h *netlink.Handle) error) {
	t.Helper()
	if err := inNetNS(path, fn); err != nil {
		t.Fatal(err)
	}
}

// podNetNS makes what the CNI bridge plugin makes: a pod namespace with
// eth0 (10.99.0.5/24, MTU 1400, default route via 10.99.0.1, a permanent
// neighbour) whose veth peer sits in a second namespace standing in for the
// bridge side, with 10.99.0.1/24. It returns both namespaces.
func podNetNS(t *testing.T) (pod, peer string) {
	pod, peer = newNetNS(t, "pod"), newNetNS(t, "peer")
	peerFD, err := unix.Open(peer, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(peerFD)
	do(t, pod, func(h *netlink.Handle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "host0", PeerNamespace: netlink.NsFd(peerFD)}
		if err := h.LinkAdd(veth); err != nil {
			return err
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: ipnet("10.99.0.5/24")}); err != nil {
			return err
		}
		if err := h.LinkSetUp(eth0); err != nil {
			return err
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
			return err
		}
		return h.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, IP: net.ParseIP("10.99.0.7"),
			HardwareAddr: mac("aa:bb:cc:dd:ee:07"), State: netlink.NUD_PERMANENT})
	})
	do(t, peer, func(h *netlink.Handle) error {
		host0, err := h.LinkByName("host0")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(host0, &netlink.Addr{IPNet: ipnet("10.99.0.1/24")}); err != nil {
			return err
		}
		return h.LinkSetUp(host0)
	})
	return pod, peer
}

func TestAttachConnectsTapAndVeth(t *testing.T) {
	pod, _ := podNetNS(t)
	var eth0MAC net.HardwareAddr
	do(t, pod, func(h *netlink.Handle) error {
		l, err := h.LinkByName("eth0")
		eth0MAC = l.Attrs().HardwareAddr
		return err
	})

	a, err := Attach(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Detach() })

	want := Config{
		Interfaces: []Interface{{Name: "eth0", Index: a.Config.Interfaces[0].Index, MAC: eth0MAC, MTU: 1400, Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.0.5/24")}}},
		Routes:     []Route{{Gw: netip.MustParseAddr("10.99.0.1"), Dev: "eth0"}},
		Neighbors:  []Neighbor{{IP: netip.MustParseAddr("10.99.0.7"), MAC: mac("aa:bb:cc:dd:ee:07"), Dev: "eth0"}},
	}
	if fmt.Sprint(a.Config) != fmt.Sprint(want) {
		t.Errorf("Config = %+v\nwant %+v", a.Config, want)
	}
	if len(a.NICs) != 1 || a.NICs[0].Tap != "veil-tap0" || a.NICs[0].Veth != "eth0" || a.NICs[0].MAC.String() != eth0MAC.String() || a.NICs[0].File == nil {
		t.Fatalf("NICs = %+v, want veil-tap0 for eth0 with MAC %s and an fd", a.NICs, eth0MAC)
	}
	do(t, pod, func(h *netlink.Handle) error {
		tap, err := h.LinkByName("veil-tap0")
		if err != nil {
			return fmt.Errorf("tap missing: %w", err)
		}
		if tap.Attrs().MTU != 1400 || tap.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("tap: MTU %d, flags %v; want the veth's MTU 1400, up", tap.Attrs().MTU, tap.Attrs().Flags)
		}
		for _, dev := range []string{"eth0", "veil-tap0"} {
			out := tcFilters(t, pod, dev)
			other := map[string]string{"eth0": "veil-tap0", "veil-tap0": "eth0"}[dev]
			if !strings.Contains(out, "mirred (Egress Redirect to device "+other+")") {
				t.Errorf("ingress filters of %s:\n%s\nwant a mirred redirect to %s", dev, out, other)
			}
		}
		return nil
	})

	// A frame written by "the guest" into the tap leaves through eth0: an
	// ARP request from the pod IP for the peer's address. The peer's kernel
	// answers to eth0, and the answer comes back out of the tap.
	arpExchange(t, a.NICs[0].File, eth0MAC)

	a.CloseFiles()
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	do(t, pod, func(h *netlink.Handle) error {
		if _, err := h.LinkByName("veil-tap0"); err == nil {
			t.Error("tap still there after Detach")
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("Detach removed the veth: %w", err)
		}
		qdiscs, err := h.QdiscList(eth0)
		if err != nil {
			return err
		}
		for _, q := range qdiscs {
			if q.Type() == "ingress" {
				t.Errorf("eth0 keeps its ingress qdisc after Detach: %+v", q)
			}
		}
		addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.5/24" {
			t.Errorf("eth0 addresses after Detach: %v, %v; want 10.99.0.5/24 as CNI left it", addrs, err)
		}
		return nil
	})
	if err := a.Detach(); err != nil {
		t.Errorf("second Detach: %v", err)
	}
}

// tcFilters is `tc filter show dev DEV ingress` in the namespace at path.
func tcFilters(t *testing.T, path, dev string) string {
	t.Helper()
	var out []byte
	err := inNetNS(path, func(*netlink.Handle) error {
		var err error
		out, err = execOut("tc", "filter", "show", "dev", dev, "ingress")
		return err
	})
	if err != nil {
		t.Fatalf("tc filter show dev %s: %v: %s", dev, err, out)
	}
	return string(out)
}

// arpExchange writes an ARP request for 10.99.0.1 from 10.99.0.5 (srcMAC)
// into the tap and waits for the reply to come out of it.
func arpExchange(t *testing.T, tap *os.File, srcMAC net.HardwareAddr) {
	t.Helper()
	var frame bytes.Buffer
	frame.Write(make([]byte, 10)) // struct virtio_net_hdr: no offloads
	frame.Write(bytes.Repeat([]byte{0xff}, 6))
	frame.Write(srcMAC)
	binary.Write(&frame, binary.BigEndian, uint16(unix.ETH_P_ARP))
	binary.Write(&frame, binary.BigEndian, []uint16{1, unix.ETH_P_IP}) // Ethernet, IPv4
	frame.Write([]byte{6, 4})
	binary.Write(&frame, binary.BigEndian, uint16(1)) // request
	frame.Write(srcMAC)
	frame.Write(net.ParseIP("10.99.0.5").To4())
	frame.Write(make([]byte, 6))
	frame.Write(net.ParseIP("10.99.0.1").To4())
	if _, err := tap.Write(frame.Bytes()); err != nil {
		t.Fatalf("writing an ARP request into the tap: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	if err := tap.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := tap.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("no ARP reply came out of the tap within 10s: the redirect does not work")
		}
		if err != nil {
			t.Fatal(err)
		}
		f := buf[10:n]
		if len(f) >= 42 && bytes.Equal(f[0:6], srcMAC) && binary.BigEndian.Uint16(f[12:14]) == unix.ETH_P_ARP &&
			binary.BigEndian.Uint16(f[20:22]) == 2 && net.IP(f[28:32]).Equal(net.ParseIP("10.99.0.1")) {
			return
		}
	}
}

func TestAttachWithoutCNIInterface(t *testing.T) {
	ns := newNetNS(t, "empty")
	a, err := Attach(ns)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Config.Empty() || len(a.NICs) != 0 {
		t.Errorf("Attach of a namespace with only lo: %+v, want no interface", a)
	}
	if err := a.Detach(); err != nil {
		t.Error(err)
	}
}

func TestAttachMissingNamespace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone")
	_, err := Attach(path)
	if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Attach(%s) = %v, want an error naming the path", path, err)
	}
}

// TestAttachRefusesBusyIngress: a veth whose ingress qdisc something else
// owns is refused with a message naming it, and the failed Attach leaves
// neither a tap nor a change to that qdisc.
func TestAttachRefusesBusyIngress(t *testing.T) {
	pod, _ := podNetNS(t)
	do(t, pod, func(h *netlink.Handle) error {
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		return addIngress(h, eth0.Attrs().Index)
	})
	_, err := Attach(pod)
	if err == nil || !strings.Contains(err.Error(), "eth0") {
		t.Fatalf("Attach with eth0's ingress taken: %v, want an error naming eth0", err)
	}
	do(t, pod, func(h *netlink.Handle) error {
		if _, err := h.LinkByName("veil-tap0"); err == nil {
			t.Error("failed Attach left veil-tap0")
		}
		eth0, err := h.LinkByName("eth0")
		if err != nil {
			return err
		}
		qdiscs, err := h.QdiscList(eth0)
		if err != nil {
			return err
		}
		found := false
		for _, q := range qdiscs {
			found = found || q.Type() == "ingress"
		}
		if !found {
			t.Error("failed Attach removed the ingress qdisc it did not add")
		}
		return nil
	})
}

// TestTapGoesWithItsLastFD: the tap is not persistent, so a VM (or shim)
// that dies leaves no tap behind.
func TestTapGoesWithItsLastFD(t *testing.T) {
	pod, _ := podNetNS(t)
	a, err := Attach(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Detach() })
	a.CloseFiles()
	do(t, pod, func(h *netlink.Handle) error {
		if _, err := h.LinkByName("veil-tap0"); err == nil {
			t.Error("tap still there after its only fd was closed")
		}
		return nil
	})
}

// execOut runs a command in the calling thread's namespace and returns its
// combined output.
func execOut(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
