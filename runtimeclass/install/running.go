package install

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// runningShims lists the pids of processes running the shim installed at
// shimPath (a host path), looking at procDir (the host's /proc). A shim
// replaced or deleted since it started shows as "<path> (deleted)".
func runningShims(procDir, shimPath string) []int {
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join(procDir, e.Name(), "exe"))
		if err != nil {
			continue
		}
		if strings.TrimSuffix(exe, " (deleted)") == shimPath {
			pids = append(pids, pid)
		}
	}
	return pids
}
