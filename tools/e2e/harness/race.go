package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
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
	var b, sum strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading race report: %w", err)
		}
		when := ""
		if fi, err := os.Stat(f); err == nil {
			when = fi.ModTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(&b, "\n--- %s (written %s)\n%s", f, when, data)
		fmt.Fprintf(&sum, "\n--- %s (written %s)\n%s", filepath.Base(f), when, SummarizeRaces(string(data)))
	}
	// The summary comes last: a CI log that keeps only its tail still
	// shows where each race is.
	return fmt.Errorf("%d process(es) reported data races (reports in %s):%s\n\nsummary, the top frames of each access:%s", len(files), r.Dir, b.String(), sum.String())
}

// raceFrames is how many stack lines of each access SummarizeRaces keeps
// (a frame is two lines: function, then file:line).
const raceFrames = 8

// SummarizeRaces keeps, of each race in a race detector report, the access
// headers ("Write at ... by goroutine N:", "Previous read at ...") and the
// top frames under each.
func SummarizeRaces(report string) string {
	var b strings.Builder
	keep := 0
	for line := range strings.Lines(report) {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "WARNING: DATA RACE"):
			b.WriteString(line)
			keep = 0
		case strings.HasSuffix(t, ":") && (strings.Contains(t, " at 0x") || strings.HasPrefix(t, "Previous ")):
			b.WriteString(line)
			keep = raceFrames
		case keep > 0 && t != "":
			b.WriteString(line)
			keep--
		default:
			keep = 0
		}
	}
	return b.String()
}
