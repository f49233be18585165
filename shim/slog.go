package shim

import (
	"context"
	"log/slog"

	"github.com/containerd/log"
)

// entryHandler is a slog.Handler that hands each record to a containerd log
// entry (log.G(ctx)) at the record's level, its attributes as fields, so
// the lines of packages that log with slog (the hypervisor driver) land in
// containerd's log with the pod's fields. It writes synchronously: a
// logrus WriterLevel pipe would cost a goroutine per pod VM that lives
// until the garbage collector finalizes the writer.
type entryHandler struct {
	e      *log.Entry
	prefix string // open groups, "a.b."
}

// slogTo returns a slog.Logger that writes to e.
func slogTo(e *log.Entry) *slog.Logger { return slog.New(entryHandler{e: e}) }

func (h entryHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.e.Logger.IsLevelEnabled(logrusLevel(l))
}

func (h entryHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make(log.Fields, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		addAttr(fields, h.prefix, a)
		return true
	})
	h.e.WithFields(fields).WithTime(r.Time).Log(logrusLevel(r.Level), r.Message)
	return nil
}

func (h entryHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make(log.Fields, len(attrs))
	for _, a := range attrs {
		addAttr(fields, h.prefix, a)
	}
	return entryHandler{e: h.e.WithFields(fields), prefix: h.prefix}
}

func (h entryHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return entryHandler{e: h.e, prefix: h.prefix + name + "."}
}

// addAttr flattens a into fields, groups as dotted keys.
func addAttr(fields log.Fields, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		if a.Key != "" {
			prefix += a.Key + "."
		}
		for _, g := range v.Group() {
			addAttr(fields, prefix, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	fields[prefix+a.Key] = v.Any()
}

func logrusLevel(l slog.Level) log.Level {
	switch {
	case l >= slog.LevelError:
		return log.ErrorLevel
	case l >= slog.LevelWarn:
		return log.WarnLevel
	case l >= slog.LevelInfo:
		return log.InfoLevel
	default:
		return log.DebugLevel
	}
}
