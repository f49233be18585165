package harness

import (
	"strings"
	"testing"
)

// A report in the race detector's format, shortened.
const raceReport = `==================
WARNING: DATA RACE
Write at 0x00c0001a2b38 by goroutine 74:
  github.com/veil-runtime/veil/shim.(*service).unmountContainer()
      /src/shim/create.go:290 +0x1a4
  github.com/veil-runtime/veil/shim.(*service).delete()
      /src/shim/delete.go:81 +0x5c4
  github.com/veil-runtime/veil/shim.(*service).Delete()
      /src/shim/delete.go:25 +0x84
  github.com/containerd/containerd/api/runtime/task/v3.RegisterTTRPCTaskService.func2()
      /mod/api/runtime/task/v3/shim_ttrpc.pb.go:60 +0xd0
  github.com/containerd/ttrpc.(*serviceSet).handle.func1()
      /mod/ttrpc@v1.2.10/services.go:119 +0x251

Previous read at 0x00c0001a2b38 by goroutine 73:
  github.com/veil-runtime/veil/shim.(*service).unmountContainer()
      /src/shim/create.go:285 +0x9c

Goroutine 74 (running) created at:
  github.com/containerd/ttrpc.(*serviceSet).handle()
      /mod/ttrpc@v1.2.10/services.go:112 +0x312
==================
Found 1 data race(s)
`

func TestSummarizeRacesKeepsEachAccessTop(t *testing.T) {
	got := SummarizeRaces(raceReport)
	for _, want := range []string{
		"WARNING: DATA RACE",
		"Write at 0x00c0001a2b38 by goroutine 74:",
		"shim.(*service).unmountContainer()",
		"/src/shim/delete.go:81",
		"Previous read at 0x00c0001a2b38 by goroutine 73:",
		"/src/shim/create.go:285",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	// Eight lines (four frames) per access: the ttrpc frames below are cut,
	// and so is where the goroutines were created.
	for _, cut := range []string{"services.go:119", "created at", "Found 1"} {
		if strings.Contains(got, cut) {
			t.Errorf("summary keeps %q:\n%s", cut, got)
		}
	}
}
