package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: the
// broker is a long-lived server, so a goroutine per request or per session
// that never ends is a leak that grows with every guest that attests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
