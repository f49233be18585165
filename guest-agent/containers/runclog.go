package containers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	runc "github.com/containerd/go-runc"
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

// runcError adds the OCI runtime's own explanation from the bundle's log
// to err, prefixed with the runtime's name.
func runcError(r Runc, bundle, what string, err error) error {
	b, _ := os.ReadFile(bundle + "/log.json")
	if msg := LastRuncError(b); msg != "" {
		return fmt.Errorf("%s: %w: %s: %s", what, err, runtimeName(r), msg)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// runtimeName is the OCI runtime's binary name ("crun"), or "runc" for a
// client that is not go-runc's.
func runtimeName(r Runc) string {
	if c, ok := r.(*runc.Runc); ok && c.Command != "" {
		return filepath.Base(c.Command)
	}
	return "runc"
}
