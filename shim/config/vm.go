package config

import (
	"encoding/hex"
	"log/slog"
	"strings"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
	"github.com/veil-runtime/veil/guest-agent/boot"
	"github.com/veil-runtime/veil/hypervisor"
)

// Kernel parameters that tell the agent it runs a confidential pod. They
// are part of the measured launch (SNP kernel-hashes, TDX RTMR), so a host
// that drops or changes them changes the measurement the broker checks.
const (
	// TEEParam names the TEE: sample, snp or tdx.
	TEEParam = wire.TEEParam
	// InitDataDigestParam carries the init-data digest (hex) for the sample
	// TEE, which has no hardware field to bind it in (veil-dev: software,
	// proves nothing).
	InitDataDigestParam = wire.InitDataDigestParam
)

// GuestKernelArgs are the kernel parameters this handler adds to the
// driver's own command line for a pod whose init-data digest is
// initDataDigest (nil: no init-data): hypervisor.kernel_args, then the
// agent's log level when agent.log_level is not info (veil.log; nothing
// by default, so the default measured command line does not change), then
// for a confidential handler veil.tee=<tee>, and for the sample TEE the digest
// (hardware TEEs bind it in SNP HOSTDATA / TDX MRCONFIGID instead).
//
// The shim launches pods with exactly these (VM), and `veil measure`
// (attestation/measure) hashes exactly these: one function, so the
// reference values cannot drift from what is launched.
func (c Config) GuestKernelArgs(initDataDigest []byte) []string {
	args := append([]string(nil), c.Hypervisor.KernelArgs...)
	if l, err := c.Agent.Level(); err == nil && l != slog.LevelInfo {
		args = append(args, boot.LogLevelParam+"="+strings.ToLower(c.Agent.LogLevel))
	}
	if !c.Confidential.Enabled() {
		return args
	}
	args = append(args, TEEParam+"="+string(c.Confidential.Kind()))
	if c.Confidential.Kind() == hypervisor.TEESample && len(initDataDigest) > 0 {
		args = append(args, InitDataDigestParam+"="+hex.EncodeToString(initDataDigest))
	}
	return args
}

// PinnedVCPUs reports whether the handler boots every pod with exactly
// hypervisor.vcpus vCPUs: SEV-SNP and TDX, whose launch measurement covers
// one VMSA per vCPU (SNP) or the vCPU count (TDX), so that one reference
// value fits every pod. The pod's CPU limit then applies only through the
// pod's cgroup on the host, not as extra vCPUs.
func (c Config) PinnedVCPUs() bool { return c.Confidential.Kind().Hardware() }

// VM is the handler's part of a pod VM's configuration: binary, guest
// image (the root image instead of the initrd when rootfs_image is set), kernel parameters (GuestKernelArgs), size, accelerator, transport,
// debugging and the TEE with the pod's init-data digest bound. The caller
// adds what belongs to one pod: ID, state and shared directories, NICs and
// hotplug slots.
func (c Config) VM(initDataDigest []byte, vcpus, memMiB uint32) hypervisor.Config {
	h := c.Hypervisor
	vm := hypervisor.Config{
		Binary:                 h.Binary,
		BIOS:                   h.BIOS,
		Kernel:                 h.Kernel,
		Initrd:                 h.Initrd,
		KernelArgs:             c.GuestKernelArgs(initDataDigest),
		VCPUs:                  vcpus,
		MemoryMiB:              memMiB,
		Accel:                  hypervisor.Accel(h.Accel),
		Transport:              hypervisor.Transport(h.Transport),
		TCGTranslationCacheMiB: h.TCGTranslationCacheMiB,
		ReclaimFreedMemory:     h.ReclaimGuestFreedMemory,
		Debug:                  c.Debug,
		DebugConsole:           c.DebugConsole,
		Console:                h.Console(),
	}
	if h.RootfsImage != "" {
		vm.Initrd, vm.RootImage = "", h.RootfsImage
	}
	if c.Confidential.Enabled() {
		vm.TEE = c.Confidential.TEEConfig(initDataDigest)
	}
	return vm
}
