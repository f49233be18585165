package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/veil-runtime/veil/attestation/measure/snp"
	"github.com/veil-runtime/veil/attestation/measure/tdx"
	"github.com/veil-runtime/veil/hypervisor"
)

// Result is what Measure computed from Inputs.
type Result struct {
	Inputs Inputs `json:"inputs"`
	// SHA-256 of the files, and of the command line as SEV hashes it
	// (with its NUL).
	FirmwareSHA256 string     `json:"firmware_sha256,omitempty"`
	KernelSHA256   string     `json:"kernel_sha256"`
	InitrdSHA256   string     `json:"initrd_sha256,omitempty"`
	SNP            *SNPValues `json:"snp,omitempty"`
	TDX            *TDXValues `json:"tdx,omitempty"`
}

// SNPValues are the SEV-SNP values of a launch.
type SNPValues struct {
	// Measurement is the launch digest: MEASUREMENT in the report, the
	// broker's snp.measurement.
	Measurement string `json:"measurement"`
	// FirmwareDigest is the digest of the firmware pages alone
	// (sev-snp-measure --snp-ovmf-hash).
	FirmwareDigest string `json:"firmware_digest"`
	// CmdlineSHA256 is the command line's entry in the kernel hashes table.
	CmdlineSHA256 string `json:"cmdline_sha256"`
	VCPUSig       uint32 `json:"vcpu_sig"`
	// Sections are the firmware's SEV metadata sections.
	Sections []snp.Section `json:"sections"`
}

// TDXValues are the TDX registers of a launch (hex).
type TDXValues struct {
	MRTD string    `json:"mrtd"`
	RTMR [4]string `json:"rtmr"`
	// RTMR0Known is false when RTMR 0 could not be computed (it needs the
	// digests of QEMU's ACPI tables).
	RTMR0Known bool `json:"rtmr0_known"`
}

// Measure reads the files in and computes the values of its TEE.
func Measure(in Inputs) (Result, error) {
	r := Result{Inputs: in}
	kernel, err := os.ReadFile(in.Kernel)
	if err != nil {
		return r, fmt.Errorf("reading the kernel: %w", err)
	}
	r.KernelSHA256 = sum(kernel)
	var initrd []byte
	if in.Initrd != "" {
		if initrd, err = os.ReadFile(in.Initrd); err != nil {
			return r, fmt.Errorf("reading the initrd: %w", err)
		}
		r.InitrdSHA256 = sum(initrd)
	}
	switch in.TEE {
	case hypervisor.TEESNP:
		fw, err := os.ReadFile(in.Firmware)
		if err != nil {
			return r, fmt.Errorf("reading the SNP firmware: %w", err)
		}
		r.FirmwareSHA256 = sum(fw)
		v, err := SNP(in, fw, kernel, initrd)
		if err != nil {
			return r, err
		}
		r.SNP = &v
	case hypervisor.TEETDX:
		fw, err := os.ReadFile(in.Firmware)
		if err != nil {
			return r, fmt.Errorf("reading the TDX firmware: %w", err)
		}
		r.FirmwareSHA256 = sum(fw)
		v, err := TDX(in, fw, kernel, initrd)
		if err != nil {
			return r, err
		}
		r.TDX = &v
	case hypervisor.TEESample:
		// No hardware value: the init-data digest is on the command line.
	default:
		return r, fmt.Errorf("TEE %q has no launch measurement (want snp, tdx or sample)", in.TEE)
	}
	return r, nil
}

// SNP computes the SEV-SNP values of a QEMU launch of fw with kernel,
// initrd (nil: none) and in.Append, in.VCPUs VMSAs of in's vCPU signature
// and in.GuestFeatures.
func SNP(in Inputs, fw, kernel, initrd []byte) (SNPValues, error) {
	var v SNPValues
	if snp.IsIGVM(in.Firmware) {
		return v, fmt.Errorf("firmware %s is an IGVM file: its SNP launch digest is not computed here (use an OVMF AmdSev image)", in.Firmware)
	}
	sig, err := in.SNPVCPUSig()
	if err != nil {
		return v, err
	}
	m, err := snp.ParseMetadata(fw)
	if err != nil {
		return v, fmt.Errorf("reading the SEV metadata of %s: %w", in.Firmware, err)
	}
	seed, err := snp.OVMFDigest(fw)
	if err != nil {
		return v, fmt.Errorf("measuring %s: %w", in.Firmware, err)
	}
	hashes := snp.HashKernel(kernel, initrd, in.Append)
	d, err := snp.Launch{
		Firmware: seed, Metadata: m, Kernel: &hashes,
		VCPUs: int(in.VCPUs), VCPUSig: sig, GuestFeatures: in.GuestFeatures, VMM: snp.VMMQEMU,
	}.Digest()
	if err != nil {
		return v, fmt.Errorf("measuring the SNP launch of %s: %w", in.Firmware, err)
	}
	return SNPValues{
		Measurement:    hex.EncodeToString(d[:]),
		FirmwareDigest: hex.EncodeToString(seed[:]),
		CmdlineSHA256:  hex.EncodeToString(hashes.Cmdline[:]),
		VCPUSig:        sig,
		Sections:       m.Sections,
	}, nil
}

// TDX computes the TDX values of a QEMU launch of fw with kernel, initrd
// (nil: none), in.Append and in.MemoryMiB of RAM (attestation/measure/tdx,
// KVM's single-pass page add). RTMR 0 is left unknown: it covers QEMU's
// ACPI tables, which only a reference boot's event log gives. RTMR 1
// covers the kernel with the setup header QEMU patches for the guest's RAM,
// so it follows the VM's memory size (handler base plus the pod's memory
// limit).
func TDX(in Inputs, fw, kernel, initrd []byte) (TDXValues, error) {
	if in.Initrd != "" && initrd == nil {
		initrd = []byte{} // an empty -initrd file is still an initrd
	}
	v, err := tdx.Measure(tdx.Inputs{
		Firmware: fw, Kernel: kernel, Initrd: initrd, Cmdline: in.Append,
		MemoryBytes: uint64(in.MemoryMiB) << 20,
	})
	if err != nil {
		return TDXValues{}, fmt.Errorf("measuring the TDX launch of %s: %w", in.Firmware, err)
	}
	out := TDXValues{MRTD: hex.EncodeToString(v.MRTD[:]), RTMR0Known: v.RTMR0Known}
	for i, r := range v.RTMR {
		out.RTMR[i] = hex.EncodeToString(r[:])
	}
	return out, nil
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
