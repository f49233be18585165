package guestimage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/shim/config"
)

// SNPFirmwareCandidates are where an SNP-capable OVMF (edk2's AmdSev
// build, with the kernel-hashes metadata section) is looked for when
// Options.SNPFirmware is empty: Debian's ovmf package from trixie on ships
// one as OVMF.amdsev.fd; bookworm's (2022.11) has none.
var SNPFirmwareCandidates = []string{"/usr/share/ovmf/OVMF.amdsev.fd", "/usr/share/OVMF/OVMF.amdsev.fd"}

// SNPModels are the QEMU vCPU models the manifest records veil-snp's
// launch digest for. SNP guests run with -cpu host: a node's value is the
// one of the model whose family, model and stepping its CPU has, or
// `veil measure --handler veil-snp` on the node.
var SNPModels = []string{"EPYC-Milan", "EPYC-Genoa", "EPYC-Turin"}

// TDXFirmwareCandidates are where a TDVF is looked for when
// Options.TDXFirmware is empty: Debian's ovmf package (OVMF.fd, the
// OvmfPkgX64 build, carries the TDVF metadata; trixie adds OVMF.inteltdx.fd).
var TDXFirmwareCandidates = []string{"/usr/share/ovmf/OVMF.inteltdx.fd", "/usr/share/ovmf/OVMF.fd"}

// MeasuredHandlers are the handlers whose default inputs the manifest
// records.
var MeasuredHandlers = []string{"veil-dev", "veil-snp", "veil-tdx"}

// measurements computes, for each handler of MeasuredHandlers as `veil
// install` configures it (install.HandlerConfig under the default
// prefix), the launch values of the image just written to outDir. A value
// that cannot be computed here (no SNP-capable firmware) is recorded with
// the reason instead of failing the build.
func measurements(outDir, snpFirmware, tdxFirmware string) (map[string]measure.Recorded, error) {
	out := map[string]measure.Recorded{}
	for _, h := range MeasuredHandlers {
		cfg, err := config.Parse(install.HandlerConfig(install.DefaultPrefix, h), h+".toml")
		if err != nil {
			return nil, fmt.Errorf("reading the %s handler config: %w", h, err)
		}
		in, err := measure.HandlerInputs(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s inputs: %w", h, err)
		}
		rec := measure.Recorded{Inputs: in}
		// The installed paths are recorded; the values are computed from
		// the files just built (only their contents count): vmlinux for
		// veil-dev (direct PVH boot), vmlinuz for snp and tdx (their
		// firmware boots and measures the bzImage).
		local := in
		local.Kernel, local.Initrd = filepath.Join(outDir, filepath.Base(in.Kernel)), filepath.Join(outDir, InitrdFile)
		switch in.TEE {
		case hypervisor.TEESNP:
			fw, why := findFirmware(snpFirmware, SNPFirmwareCandidates, "SNP-capable OVMF (AmdSev build with the kernel-hashes section)", "Debian bookworm's ovmf has none")
			if fw == "" {
				rec.NotComputable = why
				break
			}
			local.Firmware = fw
			rec.SNP = map[string]string{}
			for _, model := range SNPModels {
				local.CPUType = model
				r, err := measure.Measure(local)
				if err != nil {
					rec.SNP, rec.NotComputable = nil, fmt.Sprintf("SNP launch digest not computable with %s: %v", fw, err)
					break
				}
				rec.SNP[model], rec.FirmwareSHA256 = r.SNP.Measurement, r.FirmwareSHA256
			}
		case hypervisor.TEETDX:
			fw, why := findFirmware(tdxFirmware, TDXFirmwareCandidates, "TDVF (OVMF with TDX metadata)", "install Debian's ovmf")
			if fw == "" {
				rec.NotComputable = why
				break
			}
			local.Firmware = fw
			r, err := measure.Measure(local)
			if err != nil {
				rec.NotComputable = fmt.Sprintf("TDX values not computable with %s: %v", fw, err)
				break
			}
			rec.TDX, rec.FirmwareSHA256 = r.TDX, r.FirmwareSHA256
		}
		out[h] = rec
	}
	return out, nil
}

// findFirmware returns the firmware to measure with: given, or the first
// candidate present; or "" and why there is none (what names the kind of
// firmware, hint what to do).
func findFirmware(given string, candidates []string, what, hint string) (string, string) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Sprintf("firmware %s: %v", given, err)
		}
		return given, ""
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c, ""
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Sprintf("firmware %s: %v", c, err)
		}
	}
	c := append([]string(nil), candidates...)
	sort.Strings(c)
	return "", fmt.Sprintf("no %s on the build machine: none of %v exists (%s); pass it to the build, or run `veil measure --handler` on the node with its firmware", what, c, hint)
}
