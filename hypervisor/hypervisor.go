// Package hypervisor owns the seam between veil and the virtual machine
// monitors it drives: the Hypervisor interface one VM is controlled through,
// the configuration a VM is launched with, the registry drivers add
// themselves to (registry.go) and the choice of accelerator. Drivers live
// in subpackages (qemu/, later cloudhypervisor/) and register a
// Constructor under their name from init; a caller picks one by name
// (the shim: hypervisor.driver in its config) with Lookup, and learns from
// the running driver what is driver-specific: how the guest reaches the
// host's shared directory (Shares: 9p, virtio-fs or pmem, with the tag or
// device and mount options) and where the guest console log and the debug
// console socket are. Nothing here knows about pods, containers or
// containerd: callers pass in what a VM needs.
package hypervisor

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// Hypervisor controls one virtual machine.
//
// Start launches the VM and returns once the monitor process runs and its
// control channel answers; the guest may still be booting. DialAgent then
// connects to the guest agent's transport (it does not wait for the agent:
// the first request does). Stop ends the VM gracefully: the caller has
// normally asked the guest to power off already (the agent's Shutdown), so
// Stop waits for the VM to exit until the context is done, then asks the
// monitor to quit, then kills it. Kill ends the VM at once. After the VM has
// exited for any reason, Done is closed and Err says why; Cleanup is then safe
// and removes everything Start created. Every method may be called from any
// goroutine; Stop, Kill and Cleanup may be called more than once.
type Hypervisor interface {
	Start(ctx context.Context) error
	DialAgent(ctx context.Context) (net.Conn, error)
	Stop(ctx context.Context) error
	Kill() error
	Done() <-chan struct{}
	Err() error
	// PID of the monitor process (0 before Start).
	PID() int
	Cleanup() error
	// AttachBlock hot-plugs a host block device into the running VM as a
	// virtio-blk disk whose serial is dev.ID; it fails when the VM has no
	// free hotplug slot (Config.BlockSlots). DetachBlock unplugs it again
	// and returns once the guest has let go of it and the monitor has closed
	// the host device.
	AttachBlock(ctx context.Context, dev BlockDevice) error
	DetachBlock(ctx context.Context, id string) error
	// Shares says how the guest reaches what the VM exports from the host
	// (Config.SharedDir), in the order the guest sees the devices; none
	// when nothing is exported. Known from New on.
	Shares() []Share
	// ConsolePath is the host file the guest console is written to (capped
	// and rotated as Config.Console says): the guest kernel's messages and
	// the agent's log.
	ConsolePath() string
	// DebugConsolePath is the host unix socket of the guest's debug console
	// port; "" without Config.DebugConsole.
	DebugConsolePath() string
}

// ShareKind is the device a host directory or image reaches the guest through.
type ShareKind string

const (
	// Share9P is a virtio-9p device; the guest mounts it by Share.Tag.
	Share9P ShareKind = "9p"
	// ShareVirtioFS is a virtio-fs device (vhost-user, a virtiofsd on the
	// host); the guest mounts it by Share.Tag.
	ShareVirtioFS ShareKind = "virtio-fs"
	// SharePmem is a read-only image file on a virtio-pmem (or NVDIMM)
	// device; the guest mounts Share.Device, with DAX its pages are the
	// host file's.
	SharePmem ShareKind = "pmem"
)

// Share is one host directory or image the VM exports, and how the guest
// mounts it.
type Share struct {
	// HostPath is what is exported: Config.SharedDir.
	HostPath string
	Kind     ShareKind
	// Tag is the guest mount source of 9p and virtio-fs (ShareTag for
	// Config.SharedDir); Device the guest block device of pmem (/dev/pmem0).
	Tag    string
	Device string
	// FSType and Options are the guest's mount(2) type and options
	// (Options as the mount command takes them: "trans=virtio", "ro").
	FSType  string
	Options []string
}

// BlockDevice is a host block device given to a running VM.
type BlockDevice struct {
	// ID names the attachment in the monitor and is the disk's virtio
	// serial in the guest (/sys/block/vdX/serial): unique in the VM, at
	// most MaxBlockIDLen letters, digits, '-' or '_'.
	ID string
	// Path is the host block device (/dev/loop3, /dev/sdb, ...).
	Path     string
	ReadOnly bool
}

// MaxBlockIDLen bounds BlockDevice.ID: virtio-blk serials have 20 bytes.
const MaxBlockIDLen = 20

// Accel is the CPU accelerator a VM runs on.
type Accel string

const (
	AccelAuto Accel = "auto"
	AccelKVM  Accel = "kvm"
	AccelTCG  Accel = "tcg"
)

// BIOSDefault, as Config.BIOS, asks for the hypervisor's own default
// firmware (QEMU's SeaBIOS) instead of the driver's choice.
const BIOSDefault = "default"

// Transport is how the host reaches the guest agent.
type Transport string

const (
	// TransportAuto picks vsock when the host has /dev/vhost-vsock, else virtio-serial.
	TransportAuto Transport = "auto"
	// TransportSerial is a virtio-serial port named AgentPortName, bound to a
	// unix socket on the host.
	TransportSerial Transport = "virtio-serial"
	// TransportVsock is vsock port AgentVsockPort on the VM's CID.
	TransportVsock Transport = "vsock"
)

const (
	// AgentPortName is the virtio-serial port name the agent serves on.
	AgentPortName = wire.AgentPortName
	// AgentVsockPort is the vsock port the agent listens on.
	AgentVsockPort = wire.AgentVsockPort
	// ShareTag is the mount tag of the sandbox's shared directory, for the
	// devices that mount by tag (9p, virtio-fs).
	ShareTag = "veilshare"
	// DebugConsolePortName is the virtio-serial port of the guest's debug
	// shell (guest-agent/console), present when Config.DebugConsole is set.
	DebugConsolePortName = wire.DebugConsolePortName
)

// Config is what a VM is launched with. Paths are host paths.
type Config struct {
	// ID names the VM in logs and process titles (the sandbox ID).
	ID string
	// StateDir holds the VM's sockets, console log and pid file. It must
	// exist; Cleanup removes what the driver created in it.
	StateDir string
	// Binary is the monitor executable (qemu-system-x86_64); empty means look it up in PATH.
	Binary string
	Kernel string
	// Initrd is the initramfs the guest runs from; empty with RootImage.
	Initrd string
	// RootImage, instead of Initrd, is a read-only root filesystem image
	// (tools/guest-image rootfs.erofs) that the driver maps into the guest
	// from the host file, shared by every VM that maps it, and the guest
	// mounts as / (for QEMU: virtio-pmem with DAX, hypervisor/qemu). Not
	// for a TEE guest, whose root must be measured (its initramfs is).
	RootImage string
	// KernelArgs are appended to the driver's own kernel command line.
	KernelArgs []string
	VCPUs      uint32
	MemoryMiB  uint32
	Accel      Accel
	Transport  Transport
	// VsockCID is the guest CID for TransportVsock (>= 3).
	VsockCID uint32
	// SharedDir is exported to the guest with tag ShareTag, over a device
	// of the driver's choice (Hypervisor.Shares says which); empty means no
	// share.
	SharedDir string
	// BIOS is the firmware of a VM without a hardware TEE (SNP and TDX
	// boot TEEConfig.Firmware): empty for the driver's choice (QEMU:
	// qboot when QEMU's data directory has it, else QEMU's own default),
	// BIOSDefault for the hypervisor's own default, or a file.
	BIOS string
	// TCGTranslationCacheMiB bounds QEMU's TCG translation cache (0: driver default).
	TCGTranslationCacheMiB uint32
	// ReclaimFreedMemory hands memory the guest frees back to the host
	// (free page reporting); without it the host keeps every page the
	// guest has ever touched. Not for SEV-SNP or TDX guests.
	ReclaimFreedMemory bool
	// NICs are the VM's network cards, in guest PCI order.
	NICs []NIC
	// Debug keeps the guest kernel's boot messages on the console.
	Debug bool
	// DebugConsole gives the VM the debug console port, bound to a unix
	// socket in StateDir (Hypervisor.DebugConsolePath) for `veil debug console`.
	DebugConsole bool
	// TEE launches the VM as a confidential guest (tee.go); zero is an
	// ordinary VM.
	TEE TEEConfig
	// Console caps the console log in StateDir and forwards its lines
	// (console.go); zero: 1 MiB x 2 files, no forwarding.
	Console Console
	// BlockSlots is how many block devices can be hot-plugged at once
	// (AttachBlock); the monitor reserves a PCIe slot for each at launch.
	BlockSlots uint32
}

// NIC is a virtio-net card backed by an open tap device.
type NIC struct {
	// Tap is the tap's fd, opened by the caller (in the pod's network
	// namespace); the driver passes it to the monitor and does not close it.
	Tap *os.File
	// MAC is the guest NIC's hardware address.
	MAC net.HardwareAddr
}

// ErrVMExited is returned (wrapped) by operations on a VM that has exited.
var ErrVMExited = errors.New("vm exited")
