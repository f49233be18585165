//go:build vm

package vmtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/shim/network"
)

// TestPodNetwork is the pod network path without containerd: a pod
// namespace with a veth as CNI's bridge plugin leaves it (10.99.0.5/24,
// default via 10.99.0.1) whose peer, in a second namespace, stands in for
// the bridge; shim/network connects the veth to a tap; QEMU gets the tap as
// a virtio-net card with the veth's MAC; the agent's Network service
// configures the guest. Then the peer pings the pod IP and the guest
// kernel answers: frames cross veth → tc → tap → virtio-net and back.
func TestPodNetwork(t *testing.T) {
	pod, peer := netnsPair(t)
	att, err := network.Attach(pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := att.Detach(); err != nil {
			t.Error(err)
		}
	})
	if len(att.NICs) != 1 {
		t.Fatalf("Attach found %d interfaces, want eth0: %+v", len(att.NICs), att.Config)
	}

	root, err := os.MkdirTemp("", "veil-vmtest-net-")
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{root: root, state: filepath.Join(root, "state"), share: filepath.Join(root, "share")}
	t.Cleanup(func() { v.destroy() })
	if err := os.Mkdir(v.state, 0o755); err != nil {
		t.Fatal(err)
	}
	v.q, err = qemu.New(hypervisor.Config{
		ID: "net", StateDir: v.state, Kernel: guestFile("vmlinux"), Initrd: guestFile("initrd.img"),
		VCPUs: 1, MemoryMiB: 512,
		NICs: []hypervisor.NIC{{Tap: att.NICs[0].File, MAC: att.NICs[0].MAC}},
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := v.q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	att.CloseFiles()
	conn, err := v.q.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v.client = api.NewClient(conn)
	if _, err := v.client.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
		t.Fatalf("waiting for the agent: %v\nconsole:\n%s", err, v.console())
	}

	// What the shim sends (shim/podnet.go): interfaces, routes, neighbours.
	ifaces := att.Config.APIInterfaces()
	got, err := v.client.Network.UpdateInterface(ctx, &api.UpdateInterfaceRequest{Interface: ifaces[0]})
	if err != nil {
		t.Fatalf("UpdateInterface: %v\nconsole:\n%s", err, v.console())
	}
	if got.GetName() != "eth0" || got.GetHwAddr() != att.NICs[0].MAC.String() || got.GetMtu() != 1400 ||
		!slices.ContainsFunc(got.GetAddresses(), func(a *api.IPAddress) bool { return a.GetAddress() == "10.99.0.5" && a.GetPrefixLen() == 24 }) {
		t.Errorf("UpdateInterface = %v, want eth0, MAC %s, MTU 1400, 10.99.0.5/24", got, att.NICs[0].MAC)
	}
	routes, err := v.client.Network.UpdateRoutes(ctx, &api.UpdateRoutesRequest{Routes: att.Config.APIRoutes()})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(routes.GetRoutes(), func(r *api.Route) bool {
		return r.GetDest() == "" && r.GetGateway() == "10.99.0.1" && r.GetDevice() == "eth0"
	}) {
		t.Errorf("guest routes %v, want the default via 10.99.0.1 on eth0", routes.GetRoutes())
	}
	listed, err := v.client.Network.ListInterfaces(ctx, &api.ListInterfacesRequest{})
	if err != nil || len(listed.GetInterfaces()) != 1 || listed.GetInterfaces()[0].GetName() != "eth0" {
		t.Errorf("ListInterfaces = %v, %v; want eth0 alone", listed, err)
	}

	start := time.Now()
	if err := pingFrom(peer, "10.99.0.5", 60*time.Second); err != nil {
		t.Fatalf("pinging the guest at the pod IP from the bridge side: %v\nconsole:\n%s", err, v.console())
	}
	t.Logf("first echo reply from the guest after %s", time.Since(start).Round(time.Millisecond))
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
	// The tap lived as long as QEMU: gone with it, before Detach.
	inNS(t, pod, func(h *netlink.Handle) {
		if _, err := h.LinkByName(att.NICs[0].Tap); err == nil {
			t.Errorf("tap %s still in the pod namespace after the VM exited", att.NICs[0].Tap)
		}
	})
}

// netnsPair makes a pod namespace (eth0, 10.99.0.5/24, MTU 1400, default
// via 10.99.0.1) and a peer namespace holding the other end (host0,
// 10.99.0.1/24), both removed when the test ends.
func netnsPair(t *testing.T) (pod, peer string) {
	pod, peer = pinnedNetNS(t, "pod"), pinnedNetNS(t, "peer")
	peerNS, err := netns.GetFromPath(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer peerNS.Close()
	inNS(t, pod, func(h *netlink.Handle) {
		must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "host0", PeerNamespace: netlink.NsFd(peerNS)}))
		eth0, err := h.LinkByName("eth0")
		must(t, err)
		must(t, h.AddrAdd(eth0, mustAddr(t, "10.99.0.5/24")))
		must(t, h.LinkSetUp(eth0))
		must(t, h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}))
	})
	inNS(t, peer, func(h *netlink.Handle) {
		host0, err := h.LinkByName("host0")
		must(t, err)
		must(t, h.AddrAdd(host0, mustAddr(t, "10.99.0.1/24")))
		must(t, h.LinkSetUp(host0))
	})
	return pod, peer
}

func pinnedNetNS(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	must(t, os.WriteFile(path, nil, 0o444))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	must(t, <-errc)
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("removing network namespace %s: %v", path, err)
		}
	})
	return path
}

// inNS runs fn with a netlink handle in the namespace at path.
func inNS(t *testing.T, path string, fn func(h *netlink.Handle)) {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	must(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	must(t, err)
	defer h.Close()
	fn(h)
}

// pingFrom sends ICMP echo requests to dst from the namespace at path, one
// a second, until a reply comes or timeout passes.
func pingFrom(path, dst string, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		deadline := time.Now().Add(timeout)
		for seq := 1; time.Now().Before(deadline); seq++ {
			msg, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x7e11, Seq: seq, Data: []byte("veil")}}).Marshal(nil)
			if _, err := c.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
				errc <- err
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second)) // one echo a second
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					break // deadline: send the next echo
				}
				m, err := icmp.ParseMessage(1, buf[:n])
				if err == nil && m.Type == ipv4.ICMPTypeEchoReply && from.String() == dst {
					errc <- nil
					return
				}
			}
		}
		errc <- fmt.Errorf("no echo reply from %s within %s", dst, timeout)
	}()
	return <-errc
}

func mustAddr(t *testing.T, s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	must(t, err)
	return a
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
