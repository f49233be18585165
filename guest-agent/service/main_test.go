package service

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running: the
// agent serves the pod for its whole life, so a goroutine per request or
// per container that never ends is a leak that grows with the pod's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
