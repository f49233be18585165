package service

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// TestPortForwardOverTTRPC relays a connection to a real loopback listener
// through the PortForward service: data both ways, a half-close the
// listener sees as EOF, its own EOF back, and DestroySandbox closing what
// is still open.
func TestPortForwardOverTTRPC(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	c := fx.client.PortForward

	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer conn.Close()
		b, _ := io.ReadAll(conn) // until the host's CloseWritePort
		_, _ = conn.Write(append([]byte("echo:"), b...))
		got <- b
	}()
	port := uint32(l.Addr().(*net.TCPAddr).Port) //nolint:gosec // G115: a TCP port

	d, err := c.DialPort(ctx, &api.DialPortRequest{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WritePort(ctx, &api.WritePortRequest{StreamId: d.StreamId, Data: []byte("ping")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CloseWritePort(ctx, &api.ClosePortRequest{StreamId: d.StreamId}); err != nil {
		t.Fatal(err)
	}
	if b := <-got; string(b) != "ping" {
		t.Fatalf("the guest's listener read %q, want ping", b)
	}
	var out bytes.Buffer
	for {
		r, err := c.ReadPort(ctx, &api.ReadPortRequest{StreamId: d.StreamId})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) == 0 {
			break
		}
		out.Write(r.Data)
	}
	if out.String() != "echo:ping" {
		t.Fatalf("read %q back, want echo:ping", out.String())
	}
	if _, err := c.ClosePort(ctx, &api.ClosePortRequest{StreamId: d.StreamId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadPort(ctx, &api.ReadPortRequest{StreamId: d.StreamId})
	wantCode(t, "ReadPort after ClosePort", err, codes.NotFound)

	_, err = c.DialPort(ctx, &api.DialPortRequest{Port: 70000})
	wantCode(t, "DialPort to port 70000", err, codes.InvalidArgument)
	_, err = c.DialPort(ctx, &api.DialPortRequest{Port: 0})
	wantCode(t, "DialPort to port 0", err, codes.InvalidArgument)
	_, err = c.WritePort(ctx, &api.WritePortRequest{StreamId: 99, Data: []byte("x")})
	wantCode(t, "WritePort to a stream never opened", err, codes.NotFound)

	// A stream still open when the sandbox goes is closed with it.
	go func() {
		if conn, err := l.Accept(); err == nil {
			defer conn.Close()
			_, _ = io.Copy(io.Discard, conn)
		}
	}()
	d, err = c.DialPort(ctx, &api.DialPortRequest{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fx.client.Sandbox.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "pod"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadPort(ctx, &api.ReadPortRequest{StreamId: d.StreamId})
	wantCode(t, "ReadPort after DestroySandbox", err, codes.NotFound)
}
