package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/hypervisor"
)

// DefaultTCGTranslationCacheMiB bounds the TCG translation cache when the
// configuration leaves it 0. QEMU's own default (1 GiB on 64-bit hosts) lets
// a long-running VM's resident memory grow far beyond what a pod's guest
// needs. The cache is resident in full once it has wrapped, as it has in
// an idle pod (boot alone fills 52 MiB: the kernel's and the agent's init
// code, run once); 32 MiB holds a small guest's working set. Bare boot to
// agent ready, interleaved, quiet machine, 7 each (medians): 64 MiB 1.98 s,
// 32 MiB 2.03 s, 24 MiB 2.06 s, 16 MiB 2.19 s (flushes retranslate the
// hot code); QEMU resident per idle pod: the cache's size, plus TCG's
// per-block heap (23.5 MiB at 64, 20.3 at 32, 17.6 at 16).
const DefaultTCGTranslationCacheMiB = 32

// Launch is everything the QEMU command line depends on, resolved to plain
// values: no auto choices left, paths final, socket fds known.
type Launch struct {
	ID     string
	Kernel string
	Initrd string
	// RootImage is a read-only root image mapped as virtio-pmem and
	// mounted as / (rootimage.go), of RootImageBytes; empty: Initrd.
	RootImage      string
	RootImageBytes int64
	KernelArgs     []string
	VCPUs          uint32
	MemoryMiB      uint32
	// Accel is AccelKVM or AccelTCG (never auto).
	Accel     hypervisor.Accel
	TBSizeMiB uint32
	// Transport is TransportSerial or TransportVsock (never auto).
	Transport hypervisor.Transport
	VsockCID  uint32
	SharedDir string
	Debug     bool
	// TEE is the confidential launch (tee.go); zero is an ordinary VM.
	TEE hypervisor.TEEConfig

	// QMPFD and AgentFD are the numbers, in QEMU, of listening unix sockets
	// the driver created (QMP, and the virtio-serial agent port when the
	// transport is virtio-serial).
	QMPFD   int
	AgentFD int
	// DebugConsoleFD, when not 0, is a listening unix socket for the
	// debug console port.
	DebugConsoleFD int
	// NICs are virtio-net cards on tap fds the driver passed to QEMU.
	NICs []NIC
	// ConsoleFD, when not 0, is the write end of a pipe QEMU writes the
	// guest console (hvc0: kernel and agent log) to; the driver reads the
	// other end (capped and rotated console.log, hypervisor.Console).
	// Otherwise the console goes to the file ConsoleLog.
	ConsoleFD  int
	ConsoleLog string
	PIDFile    string
	// BlockSlots is the number of empty PCIe root ports for hot-plugged
	// block devices (hotplug.go).
	BlockSlots uint32
	// FreePageReporting gives the VM a virtio-balloon device that reports
	// the guest's free memory, which QEMU then gives back to the host
	// (ignored for SEV-SNP and TDX, whose private memory QEMU cannot read
	// or discard page by page).
	FreePageReporting bool
	// BIOS is -bios for a VM without a hardware TEE (whose firmware is
	// TEE.Firmware); empty leaves QEMU's default.
	BIOS string
}

// NIC is a virtio-net card on a tap whose fd QEMU has as TapFD.
type NIC struct {
	TapFD int
	// MAC in the usual colon form.
	MAC string
}

// KernelCmdline is the guest kernel command line: the console on hvc0 (a
// virtio console costs far less under TCG than an emulated 8250 UART, whose
// every byte is a port I/O exit), quiet unless debugging, panic=-1 so that a
// guest panic reboots at once and -no-reboot turns that into QEMU's exit,
// then bootArgs, then the caller's extra arguments.
func KernelCmdline(debug bool, extra []string) string {
	args := []string{"console=hvc0"}
	if !debug {
		args = append(args, "quiet")
	}
	args = append(args, "panic=-1")
	args = append(args, bootArgs...)
	args = append(args, extra...)
	return strings.Join(args, " ")
}

// Append is the -append value: KernelCmdline of the launch's debug flag
// and kernel arguments. SEV-SNP (kernel-hashes) and TDX (RTMR 2) measure
// it, so `veil measure` takes it from here too.
// TCGKernelArgs come first (none under KVM or for a confidential launch,
// so no measured launch has them), then RootImageKernelArgs with a root
// image, then the caller's.
func (l Launch) Append() string {
	extra := l.TCGKernelArgs() // a new slice each call: appended to here
	if l.RootImage != "" {
		extra = append(extra, RootImageKernelArgs...)
	}
	return KernelCmdline(l.Debug, append(extra, l.KernelArgs...))
}

// TCGKernelArgs are the kernel arguments a launch adds for TCG: noapictimer
// when the guest has one vCPU, none otherwise. A confidential launch
// (veil-dev's sample TEE as well as SNP and TDX) gets none: its command
// line is a reference value (`veil measure`, computed for a KVM host),
// which must not depend on the host's accelerator.
//
// At every boot the kernel calibrates the local APIC timer against another
// clock for 100 ms (LAPIC_CAL_LOOPS), unless the CPU has the TSC-deadline
// timer (KVM's -cpu host does; TCG's "max" does not) or the platform tells
// it the timer's frequency. With noapictimer a one-vCPU guest skips the
// calibration and ticks on the HPET instead (the kernel's "no broadcast on
// UP" case). A guest with more vCPUs keeps the APIC timer: without it the
// HPET would broadcast every tick to each of them. Bare boot to agent
// ready, 2048 MiB, root image, interleaved, 7 each (medians): 1.416 s
// with the calibration, 1.336 s without.
func (l Launch) TCGKernelArgs() []string {
	if l.Accel != hypervisor.AccelTCG || l.VCPUs != 1 || l.TEE.Kind.Confidential() {
		return nil
	}
	return []string{"noapictimer"}
}

// CPU is the -cpu model: the host's CPU under KVM, "max" under TCG. An
// SEV-SNP launch digest covers the vCPU's family, model and stepping
// (CPUID 1 EAX, in each VMSA), which with "host" are the host CPU's.
func (l Launch) CPU() string {
	if l.Accel == hypervisor.AccelKVM {
		return "host"
	}
	return "max"
}

// bootArgs shorten the guest kernel's boot, each measured alone as QEMU
// start to agent ready (1 vCPU, 256 MiB, TCG; medians of 3, against
// 5.62 s without): together 5.62 -> 4.71 s.
//
//	cryptomgr.notests        4.80 s  no self-test of each crypto algorithm as it
//	                                 registers (they find broken implementations,
//	                                 not attacks; FIPS mode would need them)
//	noreplace-smp            5.15 s  no patching of SMP lock prefixes out on a
//	                                 one-vCPU guest (text patching is slow under TCG)
//	tsc=reliable             5.39 s  with no_timer_check: no clocksource watchdog
//	no_timer_check                   and no timer IRQ check; a VM's TSC is the
//	                                 host's (Kata Containers passes the same)
var bootArgs = []string{"cryptomgr.notests", "noreplace-smp", "tsc=reliable", "no_timer_check"}

// Args is QEMU's argument list (without argv[0]) for l.
//
// The machine is q35, trimmed of devices the guest never uses (SATA, SMBus,
// the i8042 keyboard controller, VMware port); ACPI stays because the guest
// powers off through it. Every device is virtio-pci:
//
//	virtio-serial-pci       hvc0 console -> ConsoleFD (or ConsoleLog); with the virtio-serial
//	                        transport also the agent port "veil.agent"; with
//	                        DebugConsoleFD the debug console port "veil.console"
//	vhost-vsock-pci         with the vsock transport
//	virtio-9p-pci           SharedDir, mount tag "veilshare", when set
//	virtio-net-pci          one per NIC, on "-netdev tap,fd=N" (netN)
//	virtio-balloon-pci      with FreePageReporting: free-page-reporting=on, never
//	                        inflated; the guest reports freed 2 MiB blocks and
//	                        QEMU discards them, so host memory follows what the
//	                        guest uses instead of what it ever touched
//	pcie-root-port          BlockSlots empty ports (veil-hpN) that hot-plugged
//	                        virtio-blk disks go into (hotplug.go)
//	virtio-pmem-pci         with RootImage: the read-only root image on a
//	                        file memory backend (rootimage.go), -m then with
//	                        slots=1,maxmem=RAM+image
func Args(l Launch) []string {
	name := "veil-" + l.ID
	a := []string{
		"-name", fmt.Sprintf("%s,process=%s", escapeOpt(name), escapeOpt(processTitle(l.ID))),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-machine", machineOpts(l),
	}
	switch l.Accel {
	case hypervisor.AccelKVM:
		a = append(a, "-accel", "kvm", "-cpu", l.CPU())
	default:
		tb := l.TBSizeMiB
		if tb == 0 {
			tb = DefaultTCGTranslationCacheMiB
		}
		// One host thread runs every vCPU (thread=single). With multi-threaded
		// TCG, the guest kernel's live code patching (text_poke_bp: int3, then
		// the new bytes, then a sync IPI) races QEMU's invalidation of
		// translated blocks: another vCPU can still run a stale block with the
		// int3 after the patch completed and the kernel oopses ("Oops: int3",
		// seen at boot and when runc created the first cgroup, more often
		// under host load). Regression: TestTenVMsLeaveNothing under load.
		a = append(a, "-accel", "tcg,thread=single,tb-size="+strconv.FormatUint(uint64(tb), 10), "-cpu", l.CPU())
	}
	a = append(a,
		"-smp", strconv.FormatUint(uint64(l.VCPUs), 10),
		"-m", memoryArg(l),
		"-kernel", l.Kernel,
	)
	if l.Initrd != "" {
		a = append(a, "-initrd", l.Initrd)
	}
	a = append(a, "-append", l.Append())
	if l.BIOS != "" && !l.TEE.Kind.Hardware() {
		a = append(a, "-bios", l.BIOS)
	}
	a = append(a,
		"-pidfile", l.PIDFile,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", l.QMPFD),
		"-mon", "chardev=qmp,mode=control",
		"-device", "virtio-serial-pci,id=vser",
	)
	if l.ConsoleFD != 0 {
		// QEMU opens /dev/fdset/N by dup'ing the fd added to set N;
		// append=on, since it would ftruncate the dup for O_TRUNC, which a
		// pipe refuses (EINVAL, QEMU 7.2).
		a = append(a,
			"-add-fd", fmt.Sprintf("fd=%d,set=%d", l.ConsoleFD, consoleFDSet),
			"-chardev", fmt.Sprintf("file,id=console,path=/dev/fdset/%d,append=on", consoleFDSet),
		)
	} else {
		a = append(a, "-chardev", "file,id=console,path="+escapeOpt(l.ConsoleLog))
	}
	a = append(a,
		"-device", "virtconsole,chardev=console,bus=vser.0",
	)
	switch l.Transport {
	case hypervisor.TransportVsock:
		a = append(a, "-device", fmt.Sprintf("vhost-vsock-pci,guest-cid=%d", l.VsockCID))
	default:
		a = append(a,
			"-chardev", fmt.Sprintf("socket,id=agent,fd=%d,server=on,wait=off", l.AgentFD),
			"-device", "virtserialport,chardev=agent,bus=vser.0,name="+hypervisor.AgentPortName,
		)
	}
	if l.DebugConsoleFD != 0 {
		a = append(a,
			"-chardev", fmt.Sprintf("socket,id=dbgcon,fd=%d,server=on,wait=off", l.DebugConsoleFD),
			"-device", "virtserialport,chardev=dbgcon,bus=vser.0,name="+hypervisor.DebugConsolePortName,
		)
	}
	if l.SharedDir != "" {
		a = append(a,
			"-fsdev", "local,id=share,path="+escapeOpt(l.SharedDir)+",security_model=passthrough,multidevs=remap",
			"-device", "virtio-9p-pci,fsdev=share,mount_tag="+hypervisor.ShareTag,
		)
	}
	for i, n := range l.NICs {
		a = append(a,
			"-netdev", fmt.Sprintf("tap,id=net%d,fd=%d", i, n.TapFD),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=net%d,mac=%s", i, n.MAC),
		)
	}
	if l.FreePageReporting && !l.TEE.Kind.Hardware() {
		a = append(a, "-device", "virtio-balloon-pci,id=balloon,free-page-reporting=on")
	}
	for i := range l.BlockSlots {
		a = append(a, "-device", fmt.Sprintf("pcie-root-port,id=%s,bus=pcie.0,chassis=%d", blockPortID(int(i)), i+1))
	}
	a = append(a, rootImageArgs(l)...)
	a = append(a, teeArgs(l)...)
	return a
}

// consoleFDSet is the QEMU fd set holding the console pipe.
const consoleFDSet = 1

// escapeOpt escapes a value for QEMU's comma-separated option syntax, where
// a literal comma is written twice.
func escapeOpt(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// processTitle is QEMU's thread name: Linux keeps 15 bytes of it.
func processTitle(id string) string {
	t := "veil-" + id
	if len(t) > 15 {
		t = t[:15]
	}
	return t
}
