package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Races collects the data race reports of the veil binaries the tier runs
// (the shim, veil-kbs, veil-snapshotter) when they are built with -race
// (make build RACE=1). CollectRaces points GORACE's log_path into Dir, so
// every process started afterwards (containerd passes its environment to
// the shims it starts) writes its reports there, one file per process,
// instead of to a stderr nobody reads.
type Races struct {
	Dir string
}

// CollectRaces sets GORACE for the processes this test binary starts.
// Reports go to logs/race when logs is set (kept with the tier's logs),
// else to a temporary directory that Check removes when it is empty.
func CollectRaces(logs string) (*Races, error) {
	var dir string
	var err error
	if logs != "" {
		dir = filepath.Join(logs, "race")
		err = os.MkdirAll(dir, 0o755)
	} else {
		dir, err = os.MkdirTemp("", "veil-e2e-race-")
	}
	if err != nil {
		return nil, fmt.Errorf("creating the race report directory: %w", err)
	}
	// halt_on_error=0: a race is reported and the test goes on, so one run
	// finds every race rather than the first.
	if err := os.Setenv("GORACE", "log_path="+filepath.Join(dir, "report")+" halt_on_error=0"); err != nil {
		return nil, fmt.Errorf("setting GORACE: %w", err)
	}
	return &Races{Dir: dir}, nil
}

// Check fails when any process wrote a race report, quoting each one.
func (r *Races) Check() error {
	files, err := filepath.Glob(filepath.Join(r.Dir, "report.*"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		if strings.HasPrefix(filepath.Base(r.Dir), "veil-e2e-race-") {
			_ = os.Remove(r.Dir)
		}
		return nil
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading race report: %w", err)
		}
		fmt.Fprintf(&b, "\n--- %s\n%s", f, data)
	}
	return fmt.Errorf("%d process(es) reported data races (reports in %s):%s", len(files), r.Dir, b.String())
}
