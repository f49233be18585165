package transport

import (
	"fmt"
	"net"
	"os"

	"github.com/mdlayher/vsock"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// VsockPort is the vsock port the agent listens on.
const VsockPort = wire.AgentVsockPort

// HaveVsock reports whether the guest has a vsock device node.
func HaveVsock() bool {
	_, err := os.Stat("/dev/vsock")
	return err == nil
}

// ListenVsock listens on VsockPort for any CID.
func ListenVsock() (net.Listener, error) {
	l, err := vsock.Listen(VsockPort, nil)
	if err != nil {
		return nil, fmt.Errorf("listening on vsock port %d: %w", VsockPort, err)
	}
	return l, nil
}
