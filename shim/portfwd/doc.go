// Package portfwd makes containerd's CRI PortForward (kubectl port-forward,
// crictl port-forward) reach a veil pod. containerd enters the pod's network
// namespace on the host and dials localhost:PORT there (tcp4 first, tcp6
// only when that fails), but the pod's processes, and so its listeners, are
// in the guest. In that namespace, which veil's shim alone uses once CNI is
// done, Start opens one TCP listener on 127.0.0.1 and adds an nftables NAT
// rule that redirects every TCP connection to 127.0.0.0/8 to it:
//
//	containerd ─ dial 127.0.0.1:8080 (pod netns) ─ nat output redirect ─> shim listener 127.0.0.1:<ephemeral>
//	    SO_ORIGINAL_DST = 8080 ─> agent PortForward.DialPort(8080) ─> guest 127.0.0.1:8080 (or [::1]:8080)
//	    bytes: ReadPort / WritePort, half-close: CloseWritePort, end: ClosePort
//
// The rule lives in its own table (ip veil_portforward, chain output, type
// nat, priority dstnat), so it is removed whole by Close and goes with the
// namespace if the shim dies. Because containerd's IPv4 dial is always
// accepted by the listener, a port nothing listens on in the guest shows as
// a connection the shim resets at once, not as "connection refused".
package portfwd
