package containers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

// LastRuncError returns the message of the last error-level entry in a
// runc JSON log, or "".
func LastRuncError(log []byte) string {
	var msg string
	for _, line := range bytes.Split(log, []byte("\n")) {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(line, &e) == nil && (e.Level == "error" || e.Level == "fatal") && e.Msg != "" {
			msg = e.Msg
		}
	}
	return msg
}

// runcError adds runc's own explanation from the bundle's log to err.
func runcError(bundle, what string, err error) error {
	b, _ := os.ReadFile(bundle + "/log.json")
	if msg := LastRuncError(b); msg != "" {
		return fmt.Errorf("%s: %w: runc: %s", what, err, msg)
	}
	return fmt.Errorf("%s: %w", what, err)
}
