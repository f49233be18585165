package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/tools/bench/report"
)

// vmLayout is what qemuBreakdown needs to tell a veil VM's mappings apart:
// the guest's RAM size, TCG's translation cache size (0 under KVM), and
// the file name of the shared root image or of the initrd, whichever the
// VM boots ("" for the other).
type vmLayout struct {
	guestMiB, tcgMiB  uint64
	rootImage, initrd string
}

// qemuBreakdown splits one QEMU process's PSS by what its mappings hold
// (report.QEMUParts), from /proc/<pid>/smaps.
func qemuBreakdown(pid int, l vmLayout) (map[string]uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, fmt.Errorf("reading QEMU's memory map: %w", err)
	}
	defer f.Close()
	return classifySmaps(f, l)
}

// classifySmaps sums the Pss of each mapping in an smaps file under the
// part it belongs to. A mapping of the guest's RAM size or more is guest
// RAM (QEMU maps it in one piece); an executable one of the translation
// cache's size (less a guard page) is TCG's code buffer; the root image's
// file is the shared image; the initrd's file is QEMU's mapping of the
// initrd (it maps the file and hands it to the guest through fw_cfg,
// keeping it for a reset); other file mappings are QEMU's binary,
// libraries, firmware and its copy of the guest kernel; the rest
// (heap, thread stacks, device buffers) is QEMU's own.
func classifySmaps(r io.Reader, l vmLayout) (map[string]uint64, error) {
	const mib = 1 << 20
	out := map[string]uint64{}
	part := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if start, end, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 && !strings.HasSuffix(f[0], ":") {
			lo, err1 := strconv.ParseUint(start, 16, 64)
			hi, err2 := strconv.ParseUint(end, 16, 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("smaps mapping line %q: not an address range", line)
			}
			path := ""
			if len(f) >= 6 {
				path = strings.Join(f[5:], " ")
			}
			size := hi - lo
			switch {
			case l.rootImage != "" && filepath.Base(path) == l.rootImage:
				part = report.PartRootImage
			case l.initrd != "" && filepath.Base(path) == l.initrd:
				part = report.PartInitrd
			case l.guestMiB > 0 && size >= l.guestMiB*mib && (path == "" || strings.HasPrefix(path, "/memfd:")):
				part = report.PartGuestRAM
			case l.tcgMiB > 0 && strings.Contains(f[1], "x") && size <= l.tcgMiB*mib && size+mib > l.tcgMiB*mib && (path == "" || strings.HasPrefix(path, "/memfd:")):
				// QEMU maps the code buffer executable, less a guard page.
				part = report.PartTCG
			case strings.HasPrefix(path, "/"):
				part = report.PartFiles
			default:
				part = report.PartQEMUHeap
			}
			continue
		}
		if f[0] == "Pss:" && len(f) >= 2 {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("smaps line %q: %w", line, err)
			}
			if part == "" {
				return nil, fmt.Errorf("smaps line %q before any mapping", line)
			}
			out[part] += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading smaps: %w", err)
	}
	return out, nil
}
