package attest

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// What a confidential guest's kernel shows of its TEE before any TEE
// driver is loaded. The host can neither remove these from a real TEE
// guest nor forge them there: the kernel decides SEV-SNP from the SEV
// status MSR, which the hypervisor cannot intercept for an SNP guest, and
// TDX from CPUID leaf 0x21, which the TDX module answers, not the host.
const (
	// SNPPlatformDevice is the platform device the kernel's core SEV code
	// registers in an SEV-SNP guest (snp_init_platform_device); the
	// sev_guest driver binds to it.
	SNPPlatformDevice = "/sys/devices/platform/sev-guest"
	// TDXCPUFlag is the /proc/cpuinfo flag of a TDX guest
	// (X86_FEATURE_TDX_GUEST).
	TDXCPUFlag = "tdx_guest"
)

// Hardware is the TEE the guest sees itself in, with what showed it.
type Hardware struct {
	SNP, TDX bool
	// Evidence names what was seen ("/sys/devices/platform/sev-guest").
	Evidence []string
}

// Name is the TEE's name (snp, tdx), none, or "snp+tdx" when both show.
func (h Hardware) Name() string {
	switch {
	case h.SNP && h.TDX:
		return "snp+tdx"
	case h.SNP:
		return SNP
	case h.TDX:
		return TDX
	}
	return None
}

// ReadHardware decides from /proc/cpuinfo's content and whether a path
// exists which TEE the guest runs in.
func ReadHardware(cpuinfo string, exists func(path string) bool) Hardware {
	var h Hardware
	if exists(SNPPlatformDevice) {
		h.SNP = true
		h.Evidence = append(h.Evidence, SNPPlatformDevice)
	}
	for _, line := range strings.Split(cpuinfo, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "flags" {
			continue
		}
		if slices.Contains(strings.Fields(value), TDXCPUFlag) {
			h.TDX = true
			h.Evidence = append(h.Evidence, "cpu flag "+TDXCPUFlag)
		}
		break // every CPU has the same flags
	}
	return h
}

// ProbeHardware is ReadHardware on the running guest.
func ProbeHardware() Hardware {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	return ReadHardware(string(cpuinfo), func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	})
}

// Decision is the TEE the agent enforces as and, when it must lock down,
// why.
type Decision struct {
	TEE  string
	Lock string
}

// DecideTEE combines the veil.tee kernel parameter with the TEE the
// hardware shows. The hardware wins: in an SNP or TDX guest the agent
// enforces as that TEE whatever the command line says (a host that drops
// veil.tee does not turn enforcement off); a parameter naming anything
// else there (none, sample, the other TEE) locks the agent down, naming
// both. Without TEE hardware the parameter decides: absent or none is an
// ordinary pod, sample is veil-dev, snp or tdx is checked later by
// loading the drivers and finding the report interface. An unknown value
// without TEE hardware is an error.
func DecideTEE(params map[string]string, hw Hardware) (Decision, error) {
	v, set := params[TEEParam]
	if set && v == "" {
		set = false
	}
	if hw.SNP && hw.TDX {
		tee := SNP
		if v == TDX {
			tee = TDX
		}
		return Decision{TEE: tee, Lock: fmt.Sprintf("the guest shows both SEV-SNP and TDX (%s)", strings.Join(hw.Evidence, ", "))}, nil
	}
	if hw.SNP || hw.TDX {
		tee := hw.Name()
		if set && v != tee {
			return Decision{TEE: tee, Lock: fmt.Sprintf("kernel parameter %s=%s, but the guest runs in %s (%s)", TEEParam, v, tee, strings.Join(hw.Evidence, ", "))}, nil
		}
		return Decision{TEE: tee}, nil
	}
	switch v {
	case "", None:
		return Decision{TEE: None}, nil
	case Sample, SNP, TDX:
		return Decision{TEE: v}, nil
	}
	return Decision{}, fmt.Errorf("kernel parameter %s=%q: want none, sample, snp or tdx", TEEParam, v)
}
