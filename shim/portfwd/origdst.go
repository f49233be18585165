package portfwd

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// originalPort is the port a redirected connection was addressed to
// (SO_ORIGINAL_DST, from conntrack).
func originalPort(c *net.TCPConn) (uint16, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("reading the original destination: %w", err)
	}
	var (
		port uint16
		serr error
	)
	err = rc.Control(func(fd uintptr) {
		// struct sockaddr_in fits the 16 address bytes of an ipv6_mreq:
		// family (2 bytes, host order), port (2, network order), address.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST) //nolint:gosec // G115: a socket fd
		if err != nil {
			serr = err
			return
		}
		port = uint16(m.Multiaddr[2])<<8 | uint16(m.Multiaddr[3])
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("reading the original destination (SO_ORIGINAL_DST): %w", err)
	}
	return port, nil
}
