// Package network connects a pod VM to the pod's network namespace, the one
// containerd created and CNI configured, as Kata Containers' default
// "tcfilter" model does:
//
//	bridge ── veth (eth0, in the pod netns) ⇄ tc ingress + u32 + mirred ⇄ tap (veil-tap0) ── fd ── QEMU virtio-net (MAC of eth0)
//
// Attach reads the namespace's CNI interfaces (Ethernet links other than
// loopback with a global address: MAC, MTU, addresses), the routes through
// them and their permanent neighbours; creates one tap per interface inside
// the namespace (its fd opened by TUNSETIFF from a thread in the namespace,
// so QEMU itself can run anywhere); and redirects every frame arriving on the
// veth to the tap and every frame arriving on the tap to the veth (an ingress
// qdisc on each with a match-all u32 filter and a mirred egress redirect).
// The guest NIC carries the veth's MAC, so the bridge, ARP and the pod IP
// work unchanged; the addresses stay on the veth, whose own stack no longer
// sees the frames. The Config Attach returns is what the guest agent is told
// to configure (package guest-agent/network does it in the guest).
//
// The taps are not persistent: the tap disappears once the shim's and
// QEMU's fds are closed, so a crashed shim leaves nothing behind in the
// namespace but the ingress qdisc on the veth, which goes with the veth when
// CNI deletes it. Detach removes the taps and the veths' ingress qdiscs (and
// so their filters) and leaves the veth, its addresses and the namespace as
// CNI made them. A namespace without a CNI interface (none configured yet,
// or a host-network pod, which has no namespace of its own) yields no NIC.
//
// The decisions (which links, routes and neighbours the guest gets, how they
// read in the agent API) are pure functions over netlink's types, covered by
// table tests; Attach and Detach are tested against a real namespace.
package network
