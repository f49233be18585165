package shim

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: the
// shim lives as long as its pod, so a goroutine per request or per pod that
// never ends is a leak that grows with the node's uptime.
func TestMain(m *testing.M) {
	if path := os.Getenv(cidHolderEnv); path != "" {
		holdCIDLock(path) // a stand-in shim (vsockcid_test.go); never returns
	}
	goleak.VerifyTestMain(m)
}
