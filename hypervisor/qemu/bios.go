package qemu

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/veil-runtime/veil/hypervisor"
)

// QbootFile is qboot's image in QEMU's data directory (Debian's
// qemu-system-data ships it in /usr/share/qemu).
const QbootFile = "qboot.rom"

// resolveBIOS is the -bios of an ordinary VM whose Config.BIOS is bios,
// for the QEMU binary at binary (a path):
//   - "": qboot when QEMU's data directory has it (qbootPath), else "" for
//     QEMU's default. qboot is a minimal firmware: it sets up PCI and the
//     ACPI tables QEMU builds, then enters the PVH kernel QEMU loaded.
//     SeaBIOS, QEMU's default, also scans for option ROMs and boot
//     devices, which under TCG costs about 0.3 s of every boot (measured
//     in doc.go);
//   - hypervisor.BIOSDefault: "", QEMU's default;
//   - a file, which must exist.
//
// A VM with a hardware TEE ignores it: it boots TEEConfig.Firmware.
func resolveBIOS(bios, binary string) (string, error) {
	switch bios {
	case "":
		return qbootPath(binary), nil
	case hypervisor.BIOSDefault:
		return "", nil
	}
	if fi, err := os.Stat(bios); err != nil {
		return "", fmt.Errorf("bios: %w", err)
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("bios %s: not a regular file", bios)
	}
	return bios, nil
}

// qbootPath is qboot.rom in the data directory of the QEMU at binary:
// share/qemu beside the binary's bin directory (after symlinks: a
// /usr/bin/qemu-system-x86_64 reads /usr/share/qemu, a QEMU installed in
// /opt/x/bin reads /opt/x/share/qemu). "" when it is not there.
func qbootPath(binary string) string {
	if p, err := filepath.EvalSymlinks(binary); err == nil {
		binary = p
	}
	p := filepath.Join(filepath.Dir(filepath.Dir(binary)), "share", "qemu", QbootFile)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	return ""
}

// biosName names the firmware in logs.
func biosName(bios string) string {
	if bios == "" {
		return "default"
	}
	return bios
}
