package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// serveQMP speaks QMP on conn: greeting, then a reply per command, each
// preceded by an event to show events are skipped. query-status answers,
// "hang" never does, anything else is a CommandNotFound error.
func serveQMP(conn net.Conn) {
	defer conn.Close()
	fmt.Fprintln(conn, `{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}}`)
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var req struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &req) != nil {
			return
		}
		fmt.Fprintln(conn, `{"event": "RTC_CHANGE", "data": {}}`)
		switch req.Execute {
		case "qmp_capabilities":
			fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
		case "query-status":
			fmt.Fprintf(conn, `{"return": {"status": "running", "running": true}, "id": %s}`+"\n", req.ID)
		case "hang":
			io.Copy(io.Discard, conn)
			return
		default:
			fmt.Fprintf(conn, `{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}, "id": %s}`+"\n", req.Execute, req.ID)
		}
	}
}

func newTestQMP(t *testing.T) *qmp {
	t.Helper()
	client, server := net.Pipe()
	go serveQMP(server)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := newQMP(ctx, client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("newQMP: %v", err)
	}
	t.Cleanup(func() { q.close() })
	return q
}

func TestQMPExecute(t *testing.T) {
	q := newTestQMP(t)
	ret, err := q.execute(context.Background(), "query-status", nil)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status returned %s (%v), want status running", ret, err)
	}
	_, err = q.execute(context.Background(), "no-such-command", nil)
	var qe *qmpError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: err = %v, want a CommandNotFound qmpError", err)
	}
	// The connection stays usable after an error reply.
	if _, err := q.execute(context.Background(), "query-status", nil); err != nil {
		t.Fatalf("query-status after error: %v", err)
	}
}

func TestQMPExecuteHonoursContext(t *testing.T) {
	q := newTestQMP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := q.execute(ctx, "hang", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung command: err = %v, want DeadlineExceeded", err)
	}
}

func TestQMPRejectsNonQMPPeer(t *testing.T) {
	client, server := net.Pipe()
	go func() {
		fmt.Fprintln(server, `{"hello": "not qmp"}`)
		server.Close()
	}()
	_, err := newQMP(context.Background(), client, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("newQMP on a non-QMP peer: err = %v, want a greeting error", err)
	}
}
