package measure

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/measure/snp"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/shim/config"
)

// DefaultGuestFeatures is SEV_FEATURES of a QEMU SNP guest: SNP active
// only. QEMU >= 9.1 initialises SNP guests with KVM_SEV_INIT2 and asks for
// no further VMSA features (debug swap, 0x20, only when configured).
const DefaultGuestFeatures = 0x1

// HostCPU is the -cpu model of a KVM guest: the host's CPU.
const HostCPU = "host"

// Inputs are everything a launch measurement depends on.
type Inputs struct {
	TEE hypervisor.TEE `json:"tee"`
	// Firmware is the OVMF (SNP) or TDVF (TDX) image, -bios.
	Firmware string `json:"firmware,omitempty"`
	Kernel   string `json:"kernel"`
	Initrd   string `json:"initrd,omitempty"`
	// Append is the kernel command line exactly as QEMU gets it.
	Append    string `json:"append"`
	VCPUs     uint32 `json:"vcpus"`
	MemoryMiB uint32 `json:"memory_mib"`
	// CPUType is QEMU's -cpu model: HostCPU, or a model name (EPYC-v4).
	CPUType string `json:"cpu_type"`
	// VCPUSig is the vCPU signature (CPUID 1 EAX) an SNP VMSA carries;
	// 0 means the signature of CPUType, which must then be a model name.
	VCPUSig uint32 `json:"vcpu_sig,omitempty"`
	// GuestFeatures is SEV_FEATURES (SNP only).
	GuestFeatures uint64 `json:"guest_features,omitempty"`
	// InitDataDigest is the SHA-256 of the init-data document (hex), bound
	// in HOSTDATA (SNP), MRCONFIGID (TDX) or on the command line (sample);
	// empty when none.
	InitDataDigest string `json:"init_data_digest,omitempty"`
}

// FromConfig is what a handler configured as cfg launches a pod with whose
// init-data digest is initDataDigest (nil: no init-data), on a KVM host:
// the shim's own VM settings (config.Config.VM) at the size of a pod
// without limits (SNP and TDX handlers never add vCPUs; its memory is
// default_memory_mib, config.Hypervisor.PodMemoryMiB), and the driver's -append and -cpu
// (qemu.LaunchFor). The vCPU signature is left to the caller when the CPU
// is the host's.
func FromConfig(cfg config.Config, initDataDigest []byte) Inputs {
	vm := cfg.VM(initDataDigest, cfg.Hypervisor.VCPUs, cfg.Hypervisor.PodMemoryMiB(0))
	l := qemu.LaunchFor(vm, hypervisor.AccelKVM, hypervisor.TransportVsock)
	in := Inputs{
		TEE:       cfg.Confidential.Kind(),
		Firmware:  vm.TEE.Firmware,
		Kernel:    l.Kernel,
		Initrd:    l.Initrd,
		Append:    l.Append(),
		VCPUs:     l.VCPUs,
		MemoryMiB: l.MemoryMiB,
		CPUType:   l.CPU(),
	}
	if in.TEE == hypervisor.TEESNP {
		in.GuestFeatures = DefaultGuestFeatures
	}
	if len(initDataDigest) > 0 {
		in.InitDataDigest = hex.EncodeToString(initDataDigest)
	}
	return in
}

// HandlerInputs reads the handler's own init-data document
// (confidential.initdata), when it has one, and returns FromConfig with
// its digest. It refuses a handler whose hypervisor.driver is not qemu:
// the launch it computes is QEMU's.
func HandlerInputs(cfg config.Config) (Inputs, error) {
	if d := cfg.Hypervisor.Driver; d != qemu.DriverName {
		return Inputs{}, fmt.Errorf("key hypervisor.driver: reference values are computed for the %s driver's launch only, the handler uses %q", qemu.DriverName, d)
	}
	doc, err := cfg.Confidential.LoadInitData()
	if err != nil {
		return Inputs{}, fmt.Errorf("reading the handler's init-data: %w", err)
	}
	var digest []byte
	if doc != nil {
		d := initdata.Digest(doc)
		digest = d[:]
	}
	return FromConfig(cfg, digest), nil
}

// SNPVCPUSig is the vCPU signature the SNP VMSAs carry: VCPUSig when set,
// else that of the CPUType model.
func (in Inputs) SNPVCPUSig() (uint32, error) {
	if in.VCPUSig != 0 {
		return in.VCPUSig, nil
	}
	if in.CPUType == HostCPU || in.CPUType == "" {
		return 0, fmt.Errorf("vCPU model %q: the SNP digest covers the host CPU's family, model and stepping; give them (a vCPU signature, or a QEMU model name)", HostCPU)
	}
	return snp.CPUModelSig(in.CPUType)
}

// HostVCPUSig is the vCPU signature of the CPU /proc/cpuinfo (cpuinfo)
// describes: what an SNP guest with -cpu host on that machine carries. It
// refuses a CPU that is not AMD's.
func HostVCPUSig(cpuinfo string) (uint32, error) {
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			break // the first processor is enough
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if v := fields["vendor_id"]; v != "AuthenticAMD" {
		return 0, fmt.Errorf("reading the host CPU: vendor_id %q, want AuthenticAMD (SEV-SNP hosts are AMD EPYC)", v)
	}
	var n [3]uint32
	for i, k := range []string{"cpu family", "model", "stepping"} {
		v, err := strconv.ParseUint(fields[k], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("reading the host CPU: %q is %q, want a number", k, fields[k])
		}
		n[i] = uint32(v)
	}
	return snp.VCPUSig(n[0], n[1], n[2]), nil
}
