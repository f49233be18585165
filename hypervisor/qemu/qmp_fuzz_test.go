package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// streamConn is a QMP connection whose peer sent exactly the bytes of r and
// reads whatever is written: what a compromised or broken QEMU can do.
type streamConn struct {
	net.Conn
	r io.Reader
}

func (c *streamConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *streamConn) SetDeadline(time.Time) error      { return nil }
func (c *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) Close() error                     { return nil }

// FuzzQMPDecoder feeds the QMP client whatever QEMU might send: the
// handshake, a command and an event wait end in a reply or an error (never
// a panic or a hang), the events kept stay bounded, and a command
// succeeds only on a reply that carries its id.
func FuzzQMPDecoder(f *testing.F) {
	greeting := `{"QMP": {"version": {"qemu": {"major": 8}}, "capabilities": []}}` + "\n"
	f.Add([]byte(greeting + `{"return": {}, "id": 1}` + "\n" + `{"event": "RTC_CHANGE", "data": {}}` + "\n" + `{"return": {"status": "running"}, "id": 2}` + "\n" + `{"event": "SHUTDOWN", "data": {"guest": true}}`))
	f.Add([]byte(greeting + `{"return": {}, "id": 1}` + "\n" + `{"error": {"class": "GenericError", "desc": "no"}, "id": 2}`))
	f.Add([]byte(greeting + `{"return": {}, "id": "1"}` + `{"return": {}, "id": 1}{"return": 5, "id": 2}`))
	f.Add([]byte(greeting + `{"return": {}, "id": 1}` + strings.Repeat(`{"event": "X"}`, 100) + `{"return": [], "id": 2}`))
	f.Add([]byte(`{"QMP": null}`))
	f.Add([]byte(greeting + `{"return": {}, "id": 1}{"error": null, "id": 2, "return": {"a": [1, 2, {"b": null}]}}`))
	f.Add([]byte(`[1, 2, 3]`))
	f.Add([]byte(greeting + `{"id": 1, "return": {}, "event": ""}` + `{"id": 2e0}`))
	f.Fuzz(func(t *testing.T, stream []byte) {
		ctx := context.Background()
		q, err := newQMP(ctx, &streamConn{r: bytes.NewReader(stream)}, slog.New(slog.DiscardHandler))
		if err != nil {
			return
		}
		if !hasGreeting(stream) {
			t.Fatalf("handshake accepted a stream with no greeting: %q", stream)
		}
		ret, err := q.execute(ctx, "query-status", nil)
		if err == nil {
			if !bytes.Contains(stream, []byte("2")) {
				t.Fatalf("query-status (id 2) succeeded on a stream with no id 2: %q", stream)
			}
			if ret != nil && !json.Valid(ret) {
				t.Fatalf("query-status returned invalid JSON %q", ret)
			}
		}
		_ = q.waitEvent(ctx, "SHUTDOWN", nil)
		if len(q.pending) > maxPendingEvents {
			t.Fatalf("%d events kept, want at most %d", len(q.pending), maxPendingEvents)
		}
	})
}

// hasGreeting reports whether the stream's first JSON value is an object
// with a non-null QMP member. encoding/json matches member names without
// regard to case and after unescaping, so "QmP" and "\u0051MP" count too.
func hasGreeting(stream []byte) bool {
	var first map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(stream)).Decode(&first); err != nil {
		return false
	}
	for k, v := range first {
		if strings.EqualFold(k, "QMP") && string(v) != "null" {
			return true
		}
	}
	return false
}
