package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// qmp is a minimal QEMU Machine Protocol client: it reads the greeting,
// negotiates capabilities and runs one command at a time, matching replies
// by id. Asynchronous events are logged at debug level; the last
// maxPendingEvents of them are kept for waitEvent.
type qmp struct {
	conn   net.Conn
	dec    *json.Decoder
	logger *slog.Logger

	mu      sync.Mutex // one command (or waitEvent) in flight
	nextID  int
	pending []qmpMessage // events read and not yet waited for
}

// maxPendingEvents bounds the events kept between waitEvent calls.
const maxPendingEvents = 64

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *qmpError       `json:"error"`
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// newQMP speaks QMP on conn: it waits for the greeting and enters command
// mode. ctx bounds the handshake.
func newQMP(ctx context.Context, conn net.Conn, logger *slog.Logger) (*qmp, error) {
	q := &qmp{conn: conn, dec: json.NewDecoder(conn), logger: logger}
	stop := q.deadline(ctx)
	defer stop()
	var greeting qmpMessage
	if err := q.dec.Decode(&greeting); err != nil {
		return nil, fmt.Errorf("reading qmp greeting: %w", ctxErr(ctx, err))
	}
	if greeting.QMP == nil {
		return nil, fmt.Errorf("reading qmp greeting: unexpected message %+v", greeting)
	}
	if _, err := q.executeLocked(ctx, "qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return q, nil
}

// execute runs cmd with args (nil for none) and returns its "return" value.
func (q *qmp) execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	stop := q.deadline(ctx)
	defer stop()
	return q.executeLocked(ctx, cmd, args)
}

func (q *qmp) executeLocked(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.nextID++
	id := q.nextID
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        int    `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encoding qmp %s: %w", cmd, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("sending qmp %s: %w", cmd, ctxErr(ctx, err))
	}
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("reading qmp %s reply: %w", cmd, ctxErr(ctx, err))
		}
		if m.Event != "" {
			q.keepEvent(m)
			continue
		}
		var got int
		if json.Unmarshal(m.ID, &got) != nil || got != id {
			q.logger.Debug("qmp reply to another command ignored", "id", string(m.ID))
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("running qmp %s: %w", cmd, m.Error)
		}
		return m.Return, nil
	}
}

func (q *qmp) keepEvent(m qmpMessage) {
	q.logger.Debug("qmp event", "event", m.Event)
	if len(q.pending) == maxPendingEvents {
		q.pending = q.pending[1:]
	}
	q.pending = append(q.pending, m)
}

// waitEvent returns once QEMU has sent event name with data for which
// match is true (nil matches any), whether it arrived during an earlier
// command or arrives now; ctx bounds the wait. The event is consumed.
func (q *qmp) waitEvent(ctx context.Context, name string, match func(data json.RawMessage) bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, m := range q.pending {
		if m.Event == name && (match == nil || match(m.Data)) {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			return nil
		}
	}
	stop := q.deadline(ctx)
	defer stop()
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			return fmt.Errorf("waiting for qmp event %s: %w", name, ctxErr(ctx, err))
		}
		if m.Event == "" {
			q.logger.Debug("qmp reply to no command ignored", "id", string(m.ID))
			continue
		}
		if m.Event == name && (match == nil || match(m.Data)) {
			return nil
		}
		q.keepEvent(m)
	}
}

// deadline makes ctx's end interrupt blocked reads and writes on the
// connection; the returned func undoes it.
func (q *qmp) deadline(ctx context.Context) func() {
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Now()) })
	return func() {
		stop()
		_ = q.conn.SetDeadline(time.Time{})
	}
}

func (q *qmp) close() error { return q.conn.Close() }

// ctxErr prefers the context's error over the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
