// Package wire holds the facts the host (shim, hypervisor driver, broker)
// and the guest agent must agree on outside the agent API's messages: the
// kernel parameters the agent reads, the virtio-serial port names, the
// agent's vsock port and the TEE names. Each is defined here once and
// imported by both sides, so neither can drift from the other.
//
// The package imports nothing: the hypervisor drivers, the attestation
// packages and the guest all depend on it without pulling in the API's
// generated code. The agent's method names come from the generated
// descriptors instead (guest-agent/api).
package wire

// Kernel parameters the agent reads from /proc/cmdline. The confidential
// ones are part of the measured launch (SNP kernel-hashes, TDX RTMR), so a
// host that drops or changes them changes the measurement the broker
// checks.
const (
	// TEEParam names the TEE the pod runs in: one of the TEE names below.
	TEEParam = "veil.tee"
	// InitDataDigestParam carries the init-data digest (64 hex digits) for
	// the sample TEE, which has no hardware field to bind it in (veil-dev:
	// software, proves nothing).
	InitDataDigestParam = "veil.initdata_digest"
	// LogLevelParam sets the agent's log level (debug, info, warn, error).
	LogLevelParam = "veil.log"
)

// Agent transport. The host reaches the agent on the vsock port where it
// has /dev/vhost-vsock, otherwise on the virtio-serial port bound to a unix
// socket; the protocol is the same on both.
const (
	// AgentPortName is the virtio-serial port the agent serves on.
	AgentPortName = "veil.agent"
	// AgentVsockPort is the vsock port the agent listens on.
	AgentVsockPort = 1024
	// DebugConsolePortName is the virtio-serial port of the guest's debug
	// shell (guest-agent/console).
	DebugConsolePortName = "veil.console"
	// AgentPath is where the guest image puts the agent: the initramfs's
	// /init, and the init= a root image is booted with (the kernel looks
	// for /init only in an initramfs).
	AgentPath = "/init"
)

// TEE names a trusted execution environment, as the shim writes it in
// TEEParam, the agent reports it in SetInitDataResponse and GuestDetails,
// and the key broker protocol spells it (attestation/kbs.Tee).
type TEE string

const (
	// TEENone is an ordinary VM ("" means the same).
	TEENone TEE = "none"
	// TEESample is an ordinary VM whose agent runs the confidential flow
	// with software "sample" evidence (veil-dev). Nothing changes in the
	// launch; the runtime tells the guest through its kernel command line.
	TEESample TEE = "sample"
	// TEESNP is an AMD SEV-SNP guest.
	TEESNP TEE = "snp"
	// TEETDX is an Intel TDX guest.
	TEETDX TEE = "tdx"
)

// TEEs lists every TEE name, TEENone first.
func TEEs() []TEE { return []TEE{TEENone, TEESample, TEESNP, TEETDX} }

// Confidential reports whether t runs the confidential flow (sample, snp
// or tdx).
func (t TEE) Confidential() bool { return t == TEESample || t == TEESNP || t == TEETDX }

// Hardware reports whether t needs TEE hardware (SNP or TDX).
func (t TEE) Hardware() bool { return t == TEESNP || t == TEETDX }
