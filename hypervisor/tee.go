package hypervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// TEE is the trusted execution environment a VM is launched in. The names
// are wire facts the guest agent reads back from its kernel command line,
// so they are defined once in guest-agent/api/wire.
type TEE = wire.TEE

const (
	// TEENone is an ordinary VM ("" means the same).
	TEENone = wire.TEENone
	// TEESample is an ordinary VM whose agent runs the confidential flow
	// with software "sample" evidence (veil-dev). Nothing changes in the
	// launch; the runtime tells the guest through its kernel command line.
	TEESample = wire.TEESample
	// TEESNP is an AMD SEV-SNP guest.
	TEESNP = wire.TEESNP
	// TEETDX is an Intel TDX guest.
	TEETDX = wire.TEETDX
)

// ValidTEE reports whether t is a known TEE ("" counts as none).
func ValidTEE(t TEE) bool {
	return t == "" || slices.Contains(wire.TEEs(), t)
}

// TEEConfig is the confidential part of a VM's launch. Memory is sized up
// front from Config.MemoryMiB: a TEE guest has no memory hotplug.
type TEEConfig struct {
	// Kind is the TEE; "" or TEENone launch an ordinary VM.
	Kind TEE
	// InitDataDigest is the SHA-256 of the pod's init-data document, bound
	// at launch into SNP HOSTDATA (32 bytes) or TDX MRCONFIGID (zero padded
	// to 48 bytes). Empty binds nothing (all zero).
	InitDataDigest []byte
	// Firmware is the guest firmware: an OVMF build for SNP (AmdSev, which
	// measures the kernel, initrd and command line: kernel-hashes) or TDX
	// (TDVF), or an IGVM file for SNP (name ending in .igvm). Required for
	// SNP and TDX.
	Firmware string
	// SNPPolicy is the SEV-SNP guest policy; 0 means DefaultSNPPolicy. The
	// debug bit must be off.
	SNPPolicy uint64
	// QuoteGenerationSocket is where TDX quotes are generated (the host's
	// Quote Generation Service): "vsock:<cid>:<port>" or "unix:<path>";
	// empty leaves the guest without quotes from QEMU.
	QuoteGenerationSocket string
}

// SEV-SNP launch constants.
const (
	// DefaultSNPPolicy is QEMU's default SNP guest policy: bit 16 (must be
	// one) and bit 17 (SMT allowed); debug (bit 19) and migration agent
	// (bit 18) off.
	DefaultSNPPolicy uint64 = 0x30000
	// SNPPolicyDebug is the policy bit that lets the host debug (read) the
	// guest; veil never sets it.
	SNPPolicyDebug uint64 = 1 << 19
	// SNPCBitPos is the C-bit position in page table entries of the AMD
	// EPYC generations with SEV-SNP (Milan, Genoa, Turin).
	SNPCBitPos = 51
	// SNPReducedPhysBits is the physical address bits lost to SME/SEV.
	SNPReducedPhysBits = 1
)

// Validate checks a TEE configuration's own fields.
func (c TEEConfig) Validate() error {
	if !ValidTEE(c.Kind) {
		return fmt.Errorf("unknown TEE %q (want none, sample, snp or tdx)", c.Kind)
	}
	if !c.Kind.Hardware() {
		return nil
	}
	if c.Firmware == "" {
		return fmt.Errorf("%s guest: no firmware (an OVMF/TDVF build or an IGVM file for the TEE)", teeName(c.Kind))
	}
	if len(c.InitDataDigest) > 32 {
		return fmt.Errorf("%s guest: init-data digest is %d bytes, want 32 (SHA-256)", teeName(c.Kind), len(c.InitDataDigest))
	}
	if c.Kind == TEESNP && c.SNPPolicy&SNPPolicyDebug != 0 {
		return fmt.Errorf("SEV-SNP policy %#x has the debug bit (%#x) set: the host could read the guest", c.SNPPolicy, SNPPolicyDebug)
	}
	if c.Kind == TEETDX && c.QuoteGenerationSocket != "" {
		if _, err := ParseSocketAddress(c.QuoteGenerationSocket); err != nil {
			return fmt.Errorf("TDX quote generation socket: %w", err)
		}
	}
	return nil
}

// SocketAddress is a QEMU SocketAddress (QAPI), for the JSON form of
// -object.
type SocketAddress struct {
	Type string `json:"type"`
	CID  string `json:"cid,omitempty"`
	Port string `json:"port,omitempty"`
	Path string `json:"path,omitempty"`
}

// ParseSocketAddress reads "vsock:<cid>:<port>" or "unix:<path>".
func ParseSocketAddress(s string) (SocketAddress, error) {
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "vsock":
		cid, port, ok := strings.Cut(rest, ":")
		if _, err := strconv.ParseUint(cid, 10, 32); !ok || err != nil {
			return SocketAddress{}, fmt.Errorf("%q: want vsock:<cid>:<port>", s)
		}
		if _, err := strconv.ParseUint(port, 10, 32); err != nil {
			return SocketAddress{}, fmt.Errorf("%q: want vsock:<cid>:<port>", s)
		}
		return SocketAddress{Type: "vsock", CID: cid, Port: port}, nil
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return SocketAddress{}, fmt.Errorf("%q: want unix:<absolute path>", s)
		}
		return SocketAddress{Type: "unix", Path: rest}, nil
	}
	return SocketAddress{}, fmt.Errorf("%q: want vsock:<cid>:<port> or unix:<path>", s)
}

// QEMUVersion is a QEMU release number.
type QEMUVersion struct {
	Major, Minor, Micro int
}

func (v QEMUVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// Less reports whether v is older than w.
func (v QEMUVersion) Less(w QEMUVersion) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Micro < w.Micro
}

// Minimum QEMU releases that launch each TEE: sev-snp-guest arrived in
// 9.1, tdx-guest in 10.1.
var (
	MinQEMUForSNP = QEMUVersion{9, 1, 0}
	MinQEMUForTDX = QEMUVersion{10, 1, 0}
)

// MinQEMU returns the oldest QEMU that launches t, and false when t needs
// nothing of QEMU.
func MinQEMU(t TEE) (QEMUVersion, bool) {
	switch t {
	case TEESNP:
		return MinQEMUForSNP, true
	case TEETDX:
		return MinQEMUForTDX, true
	}
	return QEMUVersion{}, false
}

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// ParseQEMUVersion reads the output of `qemu-system-x86_64 --version`
// ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)").
func ParseQEMUVersion(out string) (QEMUVersion, error) {
	m := qemuVersionRE.FindStringSubmatch(out)
	if m == nil {
		first, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		return QEMUVersion{}, fmt.Errorf("no \"QEMU emulator version X.Y\" in %q", first)
	}
	var v QEMUVersion
	v.Major, _ = strconv.Atoi(m[1])
	v.Minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.Micro, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

// CheckQEMUVersion says whether QEMU version v (of binary, for the message)
// launches t.
func CheckQEMUVersion(t TEE, binary string, v QEMUVersion) error {
	min, ok := MinQEMU(t)
	if !ok || !v.Less(min) {
		return nil
	}
	obj := "sev-snp-guest"
	if t == TEETDX {
		obj = "tdx-guest"
	}
	return fmt.Errorf("%s guests need QEMU >= %d.%d (the %s object); %s is QEMU %s: install a newer QEMU or point hypervisor.binary at one",
		teeName(t), min.Major, min.Minor, obj, binary, v)
}

// Host kernel parameters that say SEV-SNP / TDX is enabled in KVM,
// relative to the sysfs root.
const (
	SNPParam = "module/kvm_amd/parameters/sev_snp"
	TDXParam = "module/kvm_intel/parameters/tdx"
)

// CheckHostTEE says whether the host kernel (sysfs at sysRoot, normally
// /sys) can run t guests: KVM's sev_snp or tdx parameter must be Y.
func CheckHostTEE(t TEE, sysRoot string) error {
	var param, module string
	switch t {
	case TEESNP:
		param, module = SNPParam, "kvm_amd"
	case TEETDX:
		param, module = TDXParam, "kvm_intel"
	default:
		return nil
	}
	p := filepath.Join(sysRoot, param)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		if _, merr := os.Stat(filepath.Join(sysRoot, "module", module)); merr != nil {
			return fmt.Errorf("host has no %s: %s is not loaded (%s missing): %s guests need KVM on a host with %s enabled",
				teeName(t), module, p, teeName(t), teeName(t))
		}
		return fmt.Errorf("host has no %s: %s has no such parameter (%s missing): the host kernel is too old for %s guests",
			teeName(t), module, p, teeName(t))
	}
	if err != nil {
		return fmt.Errorf("reading host %s support: %w", teeName(t), err)
	}
	if v := strings.TrimSpace(string(b)); v != "Y" && v != "1" {
		return fmt.Errorf("host has no %s: %s is %q, want Y (enable it in the BIOS and load %s with %s=1)",
			teeName(t), p, v, module, filepath.Base(param))
	}
	return nil
}

// teeName is how messages spell a TEE.
func teeName(t TEE) string {
	switch t {
	case TEESNP:
		return "SEV-SNP"
	case TEETDX:
		return "TDX"
	case TEESample:
		return "sample (software, insecure)"
	}
	return string(t)
}
