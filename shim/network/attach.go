package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NIC is one tap a VM gets: QEMU's virtio-net device on it carries MAC.
type NIC struct {
	// Tap is the tap's name in the pod's namespace; Veth the CNI
	// interface it is connected to.
	Tap, Veth string
	// MAC is the veth's, for the guest NIC.
	MAC net.HardwareAddr
	// File is the tap's queue fd, for QEMU (nil once closed).
	File *os.File
}

// Attachment is a pod namespace's CNI interfaces connected to taps.
type Attachment struct {
	// NetNS is the namespace's path.
	NetNS string
	// Config is what the guest is to configure.
	Config Config
	// NICs are in the order of Config.Interfaces.
	NICs []NIC
}

// ingressHandle is the handle of an ingress qdisc (ffff:).
var ingressHandle = netlink.MakeHandle(0xffff, 0)

// tapFlags: no packet-information header and a virtio-net header, as QEMU's
// tap backend expects, and fail rather than attach to an existing device.
const tapFlags = netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TuntapFlag(unix.IFF_TUN_EXCL)

// Attach reads the CNI interfaces of the namespace at netnsPath and
// connects each to a new tap (see the package doc). A namespace without
// CNI interfaces gives an Attachment with an empty Config and no NIC. On
// error nothing is left in the namespace.
func Attach(netnsPath string) (*Attachment, error) {
	a := &Attachment{NetNS: netnsPath}
	err := inNetNS(netnsPath, func(h *netlink.Handle) error {
		cfg, err := scan(h)
		if err != nil {
			return err
		}
		a.Config = cfg
		for n, iface := range cfg.Interfaces {
			nic, err := connect(h, iface, TapName(n))
			if err != nil {
				if derr := a.detach(h); derr != nil {
					err = errors.Join(err, fmt.Errorf("undoing the taps: %w", derr))
				}
				return fmt.Errorf("connecting %s to a tap: %w", iface.Name, err)
			}
			a.NICs = append(a.NICs, nic)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attaching to pod network namespace %s: %w", netnsPath, err)
	}
	return a, nil
}

// scan reads the namespace's interfaces, routes and neighbours.
func scan(h *netlink.Handle) (Config, error) {
	links, err := h.LinkList()
	if err != nil {
		return Config{}, fmt.Errorf("listing links: %w", err)
	}
	addrs := map[int][]netlink.Addr{}
	for _, l := range links {
		as, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return Config{}, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
		}
		addrs[l.Attrs().Index] = as
	}
	ifaces := SelectInterfaces(links, addrs)
	if len(ifaces) == 0 {
		return Config{}, nil
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Config{}, fmt.Errorf("listing routes: %w", err)
	}
	neighs, err := h.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return Config{}, fmt.Errorf("listing neighbours: %w", err)
	}
	return Config{Interfaces: ifaces, Routes: SelectRoutes(routes, ifaces), Neighbors: SelectNeighbors(neighs, ifaces)}, nil
}

// connect creates the tap name (the calling thread is in the namespace:
// the tun device joins the namespace of the thread that opens it), gives
// it iface's MTU, brings it up and redirects both ways between it and
// iface. On error it removes what it made.
func connect(h *netlink.Handle, iface Interface, name string) (_ NIC, err error) {
	tap := &netlink.Tuntap{
		LinkAttrs:  netlink.LinkAttrs{Name: name},
		Mode:       netlink.TUNTAP_MODE_TAP,
		Queues:     1,
		Flags:      tapFlags,
		NonPersist: true,
	}
	if err := h.LinkAdd(tap); err != nil {
		return NIC{}, fmt.Errorf("creating tap %s: %w", name, err)
	}
	nic := NIC{Tap: name, Veth: iface.Name, MAC: iface.MAC, File: tap.Fds[0]}
	vethQdisc := false
	defer func() {
		if err != nil {
			nic.File.Close()
			_ = h.LinkDel(tap)
			if vethQdisc {
				_ = delIngress(h, iface.Index)
			}
		}
	}()
	if err := h.LinkSetMTU(tap, iface.MTU); err != nil {
		return NIC{}, fmt.Errorf("setting MTU %d on %s: %w", iface.MTU, name, err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return NIC{}, fmt.Errorf("bringing up %s: %w", name, err)
	}
	if err := addIngress(h, iface.Index); err != nil {
		return NIC{}, fmt.Errorf("on %s (does something else use its ingress?): %w", iface.Name, err)
	}
	vethQdisc = true
	if err := redirect(h, iface.Index, tap.Attrs().Index); err != nil {
		return NIC{}, fmt.Errorf("redirecting %s to %s: %w", iface.Name, name, err)
	}
	if err := addIngress(h, tap.Attrs().Index); err != nil {
		return NIC{}, fmt.Errorf("on %s: %w", name, err)
	}
	if err := redirect(h, tap.Attrs().Index, iface.Index); err != nil {
		return NIC{}, fmt.Errorf("redirecting %s to %s: %w", name, iface.Name, err)
	}
	return nic, nil
}

// addIngress adds an ingress qdisc to a link.
func addIngress(h *netlink.Handle, index int) error {
	err := h.QdiscAdd(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS,
	}})
	if err != nil {
		return fmt.Errorf("adding ingress qdisc: %w", err)
	}
	return nil
}

// redirect adds a filter to the ingress qdisc of link from that sends
// every frame out of link to.
func redirect(h *netlink.Handle, from, to int) error {
	err := h.FilterAdd(&netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from,
			Parent:    ingressHandle,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		// No selector: u32 matches every frame.
		Actions: []netlink.Action{netlink.NewMirredAction(to)},
	})
	if err != nil {
		return fmt.Errorf("adding mirred filter: %w", err)
	}
	return nil
}

// delIngress removes link's ingress qdisc and with it its filters; a link
// or qdisc already gone is fine.
func delIngress(h *netlink.Handle, index int) error {
	err := h.QdiscDel(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: index, Handle: ingressHandle, Parent: netlink.HANDLE_INGRESS,
	}})
	if err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

// CloseFiles closes the shim's tap fds once QEMU holds its own copies: the
// taps then live exactly as long as QEMU has them open.
func (a *Attachment) CloseFiles() {
	for i := range a.NICs {
		if a.NICs[i].File != nil {
			a.NICs[i].File.Close()
			a.NICs[i].File = nil
		}
	}
}

// Files are the NICs' tap fds, in NIC order.
func (a *Attachment) Files() []*os.File {
	var fs []*os.File
	for _, n := range a.NICs {
		fs = append(fs, n.File)
	}
	return fs
}

// Detach removes the taps and the ingress qdiscs (with their filters) of
// the veths, leaving the veths, their addresses and the namespace. A
// namespace already gone (CNI deleted it) has nothing left to remove. It
// may be called more than once.
func (a *Attachment) Detach() error {
	a.CloseFiles()
	if len(a.NICs) == 0 {
		return nil
	}
	err := inNetNS(a.NetNS, func(h *netlink.Handle) error { return a.detach(h) })
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detaching from pod network namespace %s: %w", a.NetNS, err)
	}
	return nil
}

func (a *Attachment) detach(h *netlink.Handle) error {
	a.CloseFiles()
	var errs []error
	for i, nic := range a.NICs {
		if l, err := h.LinkByName(nic.Tap); err == nil {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("removing tap %s: %w", nic.Tap, err))
			}
		}
		if err := delIngress(h, a.Config.Interfaces[i].Index); err != nil {
			errs = append(errs, fmt.Errorf("removing the ingress qdisc of %s: %w", nic.Veth, err))
		}
	}
	return errors.Join(errs...)
}

// inNetNS runs fn on an OS thread inside the namespace at path, with a
// netlink handle there. The thread is never returned to the Go scheduler:
// it ends with the goroutine, so nothing else ever runs in the namespace.
// A missing namespace wraps os.ErrNotExist.
func inNetNS(path string, fn func(h *netlink.Handle) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, see above
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("opening network namespace: %w", err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering network namespace: %w", err)
			return
		}
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			errc <- fmt.Errorf("opening netlink in the namespace: %w", err)
			return
		}
		defer h.Close()
		errc <- fn(h)
	}()
	return <-errc
}
