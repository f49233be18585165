package qemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/veil-runtime/veil/hypervisor"
)

// Names of the objects a confidential launch adds.
const (
	snpObjectID    = "sev0"
	tdxObjectID    = "tdx0"
	ramBackendID   = "ram0"
	igvmObjectID   = "igvm0"
	baseMachineOpt = "q35,sata=off,smbus=off,i8042=off,vmport=off"
)

// machineOpts is the -machine value: the trimmed q35, plus for a TEE guest
// the confidential-guest-support object (and, for SNP, the memory backend
// the guest's shared memory comes from; TDX needs the split irqchip).
func machineOpts(l Launch) string {
	switch l.TEE.Kind {
	case hypervisor.TEESNP:
		m := baseMachineOpt + ",confidential-guest-support=" + snpObjectID + ",memory-backend=" + ramBackendID
		if isIGVM(l.TEE.Firmware) {
			m += ",igvm-cfg=" + igvmObjectID
		}
		return m
	case hypervisor.TEETDX:
		return baseMachineOpt + ",kernel-irqchip=split,confidential-guest-support=" + tdxObjectID
	}
	return baseMachineOpt
}

// teeArgs are the QEMU arguments of a confidential launch, beyond the
// -machine options: the TEE object, the firmware, and for SNP the memory
// backend. Memory is a fixed size (-m without slots or maxmem): a TEE guest
// has no memory hotplug, so the whole size is decided here.
//
//	SEV-SNP  -object memory-backend-memfd,id=ram0,size=<M>M,share=true,prealloc=false
//	         -object sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,
//	                 host-data=<base64 of the 32-byte init-data digest>,kernel-hashes=on
//	         -bios <OVMF>   or  -object igvm-cfg,id=igvm0,file=<f.igvm> (-machine igvm-cfg=igvm0)
//	TDX      -object {"qom-type":"tdx-guest","id":"tdx0","mrconfigid":"<base64 of 48 bytes>",
//	                  "quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}
//	         -bios <TDVF>
//
// kernel-hashes=on makes OVMF measure -kernel, -initrd and -append into the
// launch digest, so direct kernel boot stays attested. The tdx-guest object
// is written as JSON because quote-generation-socket is a structured
// SocketAddress.
func teeArgs(l Launch) []string {
	t := l.TEE
	switch t.Kind {
	case hypervisor.TEESNP:
		policy := t.SNPPolicy
		if policy == 0 {
			policy = hypervisor.DefaultSNPPolicy
		}
		obj := fmt.Sprintf("sev-snp-guest,id=%s,policy=%#x,cbitpos=%d,reduced-phys-bits=%d",
			snpObjectID, policy, hypervisor.SNPCBitPos, hypervisor.SNPReducedPhysBits)
		if len(t.InitDataDigest) > 0 {
			obj += ",host-data=" + base64.StdEncoding.EncodeToString(pad(t.InitDataDigest, 32))
		}
		obj += ",kernel-hashes=on"
		a := []string{
			"-object", fmt.Sprintf("memory-backend-memfd,id=%s,size=%dM,share=true,prealloc=false", ramBackendID, l.MemoryMiB),
			"-object", obj,
		}
		if isIGVM(t.Firmware) {
			a = append(a, "-object", "igvm-cfg,id="+igvmObjectID+",file="+escapeOpt(t.Firmware))
		} else {
			a = append(a, "-bios", t.Firmware)
		}
		return a
	case hypervisor.TEETDX:
		obj := map[string]any{"qom-type": "tdx-guest", "id": tdxObjectID}
		if len(t.InitDataDigest) > 0 {
			obj["mrconfigid"] = base64.StdEncoding.EncodeToString(pad(t.InitDataDigest, 48))
		}
		if t.QuoteGenerationSocket != "" {
			// Validated by TEEConfig.Validate before launch.
			addr, _ := hypervisor.ParseSocketAddress(t.QuoteGenerationSocket)
			obj["quote-generation-socket"] = addr
		}
		js, _ := json.Marshal(obj) // map of strings and a struct of strings: cannot fail
		return []string{"-object", string(js), "-bios", t.Firmware}
	}
	return nil
}

// isIGVM reports whether firmware is an IGVM file rather than an OVMF image.
func isIGVM(firmware string) bool { return strings.HasSuffix(firmware, ".igvm") }

// pad copies b into a zeroed slice of size bytes.
func pad(b []byte, size int) []byte {
	out := make([]byte, size)
	copy(out, b)
	return out
}

// versionTimeout bounds `qemu --version`.
const versionTimeout = 10 * time.Second

// QEMUVersion runs `binary --version` and parses it.
func QEMUVersion(ctx context.Context, binary string) (hypervisor.QEMUVersion, error) {
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return hypervisor.QEMUVersion{}, fmt.Errorf("running %s --version: %w: %s", binary, err, strings.TrimSpace(string(ee.Stderr)))
		}
		return hypervisor.QEMUVersion{}, fmt.Errorf("running %s --version: %w", binary, err)
	}
	v, err := hypervisor.ParseQEMUVersion(string(out))
	if err != nil {
		return v, fmt.Errorf("reading the version of %s: %w", binary, err)
	}
	return v, nil
}

// CheckTEE says whether this QEMU binary on a host whose sysfs is at
// sysRoot can launch tee: the configuration, QEMU's version and the host
// kernel's TEE support, each failure named. Every missing piece is listed,
// not just the first. Ordinary and sample VMs need nothing.
func CheckTEE(ctx context.Context, tee hypervisor.TEEConfig, binary, sysRoot string) error {
	if err := tee.Validate(); err != nil {
		return err
	}
	if !tee.Kind.Hardware() {
		return nil
	}
	var errs []error
	v, err := QEMUVersion(ctx, binary)
	if err != nil {
		errs = append(errs, err)
	} else if err := hypervisor.CheckQEMUVersion(tee.Kind, binary, v); err != nil {
		errs = append(errs, err)
	}
	if err := hypervisor.CheckHostTEE(tee.Kind, sysRoot); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("cannot launch a %s guest: %s", tee.Kind, strings.Join(msgs, "; "))
}

// SysRoot is the host's sysfs, where New reads KVM's TEE parameters.
const SysRoot = "/sys"

// checkTEELaunch is New's check of a confidential launch: what CheckTEE
// checks, and a hardware TEE needs KVM (never software emulation).
func checkTEELaunch(tee hypervisor.TEEConfig, binary string, accel hypervisor.Accel, sysRoot string) error {
	if err := CheckTEE(context.Background(), tee, binary, sysRoot); err != nil {
		return err
	}
	if tee.Kind.Hardware() && accel != hypervisor.AccelKVM {
		return fmt.Errorf("cannot launch a %s guest with accelerator %s: TEE guests need KVM (set hypervisor.accel to auto or kvm)", tee.Kind, accel)
	}
	return nil
}
