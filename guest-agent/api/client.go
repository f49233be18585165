package api

import (
	"context"
	"net"

	"github.com/containerd/ttrpc"
)

// Client bundles the agent's services on one ttrpc connection.
type Client struct {
	Sandbox     SandboxService
	Container   ContainerService
	Process     ProcessService
	Network     NetworkService
	Volume      VolumeService
	Attestation AttestationService
	Image       ImageService
	PortForward PortForwardService

	conn *ttrpc.Client
}

// NewClient speaks the agent API over conn (a virtio-serial socket or vsock
// connection). Closing the Client closes conn. opts configure the ttrpc
// client (the shim's metrics interceptor).
func NewClient(conn net.Conn, opts ...ttrpc.ClientOpts) *Client {
	c := ttrpc.NewClient(conn, opts...)
	return &Client{
		Sandbox:     NewSandboxClient(c),
		Container:   NewContainerClient(c),
		Process:     NewProcessClient(c),
		Network:     NewNetworkClient(c),
		Volume:      NewVolumeClient(c),
		Attestation: NewAttestationClient(c),
		Image:       NewImageClient(c),
		PortForward: NewPortForwardClient(c),
		conn:        c,
	}
}

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

// Done returns a channel closed when the connection has closed, for
// noticing a dead agent.
func (c *Client) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_ = c.conn.UserOnCloseWait(context.Background())
		close(done)
	}()
	return done
}

// TTRPC is the connection's ttrpc client, for calls by method name (tests
// that send what no generated client would).
func (c *Client) TTRPC() *ttrpc.Client { return c.conn }
