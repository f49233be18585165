package boot

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// ParseCmdline splits a kernel command line into parameters. Values may be
// double-quoted to hold spaces; a parameter without '=' maps to "".
// Later parameters win.
func ParseCmdline(line string) map[string]string {
	params := map[string]string{}
	var fields []string
	var cur strings.Builder
	inQuote, inField := false, false
	for _, r := range line {
		switch {
		case r == '"':
			inQuote = !inQuote
			inField = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inField {
				fields = append(fields, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteRune(r)
			inField = true
		}
	}
	if inField {
		fields = append(fields, cur.String())
	}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		params[k] = v
	}
	return params
}

// LogLevelParam is the kernel parameter that sets the agent's log level.
const LogLevelParam = wire.LogLevelParam

// LogLevel returns the level named by veil.log (debug, info, warn, error);
// info when unset. An unknown name is an error that says which are valid.
func LogLevel(params map[string]string) (slog.Level, error) {
	v, ok := params[LogLevelParam]
	if !ok || v == "" {
		return slog.LevelInfo, nil
	}
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("kernel parameter %s=%q: use debug, info, warn or error", LogLevelParam, v)
}

// ReadCmdline reads and parses /proc/cmdline.
func ReadCmdline() (map[string]string, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil, fmt.Errorf("reading kernel command line: %w", err)
	}
	return ParseCmdline(string(b)), nil
}
