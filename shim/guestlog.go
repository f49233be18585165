package shim

import (
	"strings"

	"github.com/containerd/log"
)

// agentLogMark is in every line the agent logs (guest-agent: its logger's
// attribute c=veil-agent, after the message).
const agentLogMark = " c=veil-agent"

// guestLogLine forwards the guest console into the shim's log (so into
// containerd's, with the pod's fields): the agent's lines, which it writes
// with slog's text handler at agent.log_level ("time=... level=WARN
// msg=... c=veil-agent ..."), at their own level without the guest's time;
// anything else (the guest kernel, the agent before its logger is set up)
// at debug. The guest is untrusted for confidential handlers: a line is
// only ever a message (quoted by the log formatter), at most
// hypervisor.MaxConsoleLine bytes, and never raises its level above error.
func guestLogLine(l *log.Entry) func(string) {
	return func(line string) {
		if !strings.Contains(line, agentLogMark) {
			l.WithField("source", "guest-console").Debug(line)
			return
		}
		level, rest := agentLevel(line)
		l.WithField("source", "guest-agent").Log(level, rest)
	}
}

// agentLevel reads "time=T level=L rest" into the logrus level and rest.
func agentLevel(line string) (log.Level, string) {
	rest := line
	if strings.HasPrefix(rest, "time=") {
		if _, after, ok := strings.Cut(rest, " "); ok {
			rest = after
		}
	}
	lv, after, ok := strings.Cut(rest, " ")
	if !ok || !strings.HasPrefix(lv, "level=") {
		return log.InfoLevel, line
	}
	name := strings.TrimPrefix(lv, "level=")
	if i := strings.IndexAny(name, "+-"); i > 0 {
		name = name[:i] // slog's DEBUG-4, WARN+2
	}
	switch name {
	case "DEBUG":
		return log.DebugLevel, after
	case "WARN":
		return log.WarnLevel, after
	case "ERROR":
		return log.ErrorLevel, after
	}
	return log.InfoLevel, after
}
