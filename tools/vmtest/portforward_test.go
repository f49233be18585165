//go:build vm

package vmtest

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// TestPortForwardToGuestLoopback relays bytes through the agent's
// PortForward service to a container's listener in a real guest: an echo
// server (busybox nc -e cat) gets 100 kB and a half-close, and everything
// comes back; a port nothing listens on is Unavailable, port 0 is refused.
func TestPortForwardToGuestLoopback(t *testing.T) {
	ctx := testCtx(t)
	c := shared.client.PortForward
	createContainer(t, ctx, shared, "pfecho", nil, "nc", "-l", "-p", "8080", "-e", "cat")
	startContainer(t, ctx, shared, "pfecho")

	_, err := c.DialPort(ctx, &api.DialPortRequest{Port: 0})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("DialPort(0): %v, want InvalidArgument", err)
	}
	_, err = c.DialPort(ctx, &api.DialPortRequest{Port: 8081})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("DialPort to a port nothing listens on: %v, want Unavailable", err)
	}

	// nc listens a moment after the container starts: retry until it does.
	var d *api.DialPortResponse
	deadline := time.Now().Add(time.Minute)
	for {
		d, err = c.DialPort(ctx, &api.DialPortRequest{Port: 8080})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("DialPort(8080): %v", err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval while nc starts
	}
	defer func() { _, _ = c.ClosePort(ctx, &api.ClosePortRequest{StreamId: d.StreamId}) }()

	sent := bytes.Repeat([]byte("veil port-forward "), 6000) // 108 kB: several writes and reads
	start := time.Now()
	for off := 0; off < len(sent); off += 32 << 10 {
		end := min(off+32<<10, len(sent))
		if _, err := c.WritePort(ctx, &api.WritePortRequest{StreamId: d.StreamId, Data: sent[off:end]}); err != nil {
			t.Fatalf("WritePort: %v", err)
		}
	}
	if _, err := c.CloseWritePort(ctx, &api.ClosePortRequest{StreamId: d.StreamId}); err != nil {
		t.Fatalf("CloseWritePort: %v", err)
	}
	var got bytes.Buffer
	for {
		r, err := c.ReadPort(ctx, &api.ReadPortRequest{StreamId: d.StreamId})
		if err != nil {
			t.Fatalf("ReadPort after %d bytes: %v", got.Len(), err)
		}
		if len(r.Data) == 0 {
			break
		}
		got.Write(r.Data)
	}
	if !bytes.Equal(got.Bytes(), sent) {
		t.Fatalf("read back %d bytes, want the %d sent", got.Len(), len(sent))
	}
	t.Logf("%d bytes to the guest's echo server and back in %s", len(sent), time.Since(start).Round(time.Millisecond))
}
