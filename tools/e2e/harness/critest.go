package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// SpecResult is one critest case and how it ended.
type SpecResult struct {
	Name  string // describe/context texts and the case text, joined by " / "
	State string // passed, failed, skipped, pending, panicked, ...
	// Attempts is how many times ginkgo ran the case (more than one when
	// it failed and was retried under -ginkgo.flake-attempts).
	Attempts int
	// Failure is ginkgo's message and location for a case that did not
	// pass (of its last attempt), empty otherwise.
	Failure string
}

// ParseGinkgoReport reads the cases out of a ginkgo v2 JSON report
// (`--ginkgo.json-report`), leaving out suite-level nodes.
func ParseGinkgoReport(data []byte) ([]SpecResult, error) {
	var suites []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			LeafNodeType            string
			State                   string
			NumAttempts             int
			Failure                 *struct {
				Message  string
				Location struct {
					FileName   string
					LineNumber int
				}
			}
		}
	}
	if err := json.Unmarshal(data, &suites); err != nil {
		return nil, fmt.Errorf("decoding ginkgo report: %w", err)
	}
	var out []SpecResult
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(append([]string(nil), r.ContainerHierarchyTexts...), r.LeafNodeText), " / ")
			res := SpecResult{Name: name, State: r.State, Attempts: r.NumAttempts}
			if f := r.Failure; f != nil && r.State != "passed" {
				res.Failure = fmt.Sprintf("%s (%s:%d)", strings.TrimSpace(f.Message), filepath.Base(f.Location.FileName), f.Location.LineNumber)
			}
			out = append(out, res)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Count tallies results by state.
func Count(results []SpecResult) map[string]int {
	out := map[string]int{}
	for _, r := range results {
		out[r.State]++
	}
	return out
}

// Passed returns the sorted names of the cases that passed.
func Passed(results []SpecResult) []string {
	var out []string
	for _, r := range results {
		if r.State == "passed" {
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Retried returns the cases that passed only after a failed attempt, each
// with its attempt count.
func Retried(results []SpecResult) []string {
	var out []string
	for _, r := range results {
		if r.State == "passed" && r.Attempts > 1 {
			out = append(out, fmt.Sprintf("%s (%d attempts)", r.Name, r.Attempts))
		}
	}
	return out
}

// Failures returns "name: failure" for each named case that ran and did
// not pass, in the order of names.
func Failures(names []string, results []SpecResult) []string {
	by := map[string]SpecResult{}
	for _, r := range results {
		by[r.Name] = r
	}
	var out []string
	for _, n := range names {
		if r, ok := by[n]; ok && r.State != "passed" {
			out = append(out, fmt.Sprintf("%s: %s: %s", n, r.State, r.Failure))
		} else if !ok {
			out = append(out, n+": did not run")
		}
	}
	return out
}

// Regressions returns the cases in want (a recorded passing set) that are
// not in got, sorted.
func Regressions(want, got []string) []string {
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	var out []string
	for _, w := range want {
		if !have[w] {
			out = append(out, w)
		}
	}
	sort.Strings(out)
	return out
}

// Ran keeps the names in want that ran in results (were not skipped): with
// a focus, the other cases are reported as skipped.
func Ran(want []string, results []SpecResult) []string {
	ran := map[string]bool{}
	for _, r := range results {
		if r.State != "skipped" {
			ran[r.Name] = true
		}
	}
	var out []string
	for _, w := range want {
		if ran[w] {
			out = append(out, w)
		}
	}
	return out
}

// ReadNames reads a list of case names, one a line; blank lines and lines
// starting with # are ignored.
func ReadNames(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading case list: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, nil
}

// CritestCommand returns a critest run against this environment under
// handler, writing its ginkgo JSON report to report. extra are more critest
// or ginkgo flags (for example "-ginkgo.focus=...", or "-parallel", "2":
// critest then runs itself on that many ginkgo nodes through the ginkgo
// CLI, which it finds in PATH: the command's PATH starts with .cache/bin,
// where tools/deps.sh installs it).
func (e *Env) CritestCommand(ctx context.Context, handler, report string, extra ...string) *exec.Cmd {
	args := []string{
		"-runtime-endpoint", "unix://" + e.Address,
		"-image-endpoint", "unix://" + e.Address,
		"-config", filepath.Join(e.Dir, "crictl.yaml"),
		"-runtime-handler", handler,
		"-nri-socket", filepath.Join(e.Dir, "private/nri/nri.sock"),
		"-ginkgo.no-color",
		"-ginkgo.json-report", report,
	}
	cmd := e.NetNS.Command(ctx, e.Bin("critest"), append(args, extra...)...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(e.Bin("critest"))+string(os.PathListSeparator)+os.Getenv("PATH"))
	return cmd
}
