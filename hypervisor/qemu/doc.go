// Package qemu drives one VM with qemu-system-x86_64: it implements
// hypervisor.Hypervisor. It owns QEMU's command line (Args, a pure function
// over Launch), the process's life, and a minimal QMP client; it knows
// nothing of pods or containers. It registers itself with the hypervisor
// package as "qemu" (DriverName) when imported, and reports the shared
// directory as a virtio-9p share (Shares: tag hypervisor.ShareTag, mounted
// with ShareOptions) and its console files (ConsolePath, DebugConsolePath).
//
// # Command line
//
//	qemu-system-x86_64 -name veil-<id>,process=veil-<id>
//	  -nodefaults -no-user-config -nographic -no-reboot
//	  -machine q35,sata=off,smbus=off,i8042=off,vmport=off
//	  -accel tcg,thread=single,tb-size=32 -cpu max    (or: -accel kvm -cpu host)
//	  -smp N -m MiB
//	  -kernel vmlinux -initrd initrd.img       (a TEE: the bzImage vmlinuz, through -bios)
//	                                           (with RootImage: no -initrd, -m MiB,slots=1,maxmem=MiB+image,
//	                                           -object memory-backend-file,id=rootimg,mem-path=<image>,size=N,readonly=on,share=off
//	                                           -device virtio-pmem-pci,memdev=rootimg,id=rootimg0, and
//	                                           root=/dev/pmem0 rootfstype=erofs rootflags=dax ro init=/init in -append)
//	  -append "console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check <KernelArgs>"
//	                                           (TCG, one vCPU, no TEE: noapictimer before the root image's
//	                                           arguments, Launch.TCGKernelArgs)
//	  -bios <QEMU's data dir>/qboot.rom          (no hardware TEE, when there: Config.BIOS, bios.go)
//	  -pidfile <state>/qemu.pid
//	  -chardev socket,id=qmp,fd=3,server=on,wait=off -mon chardev=qmp,mode=control
//	  -device virtio-serial-pci,id=vser
//	  -add-fd fd=N,set=1 -chardev file,id=console,path=/dev/fdset/1,append=on
//	  -device virtconsole,chardev=console,bus=vser.0                     (fd N: a pipe to the driver)
//	  -chardev socket,id=agent,fd=4,server=on,wait=off
//	  -device virtserialport,chardev=agent,bus=vser.0,name=veil.agent     (virtio-serial transport)
//	  -device vhost-vsock-pci,guest-cid=N                                 (vsock transport, instead)
//	  -fsdev local,id=share,path=<SharedDir>,security_model=passthrough,multidevs=remap
//	  -device virtio-9p-pci,fsdev=share,mount_tag=veilshare              (when SharedDir is set)
//	  -device pcie-root-port,id=veil-hpN,bus=pcie.0,chassis=N+1          (BlockSlots of them, for AttachBlock)
//
// Choices, and why:
//
//   - q35, not microvm: confidential launches (SEV-SNP, TDX) need q35, and
//     the shim hot-plugs block devices into q35's PCIe root ports
//     (hotplug.go), which microvm's virtio-mmio cannot do. Under TCG
//     microvm was not faster either: veil's kernel reached its no-root
//     panic in 4.3 s on microvm against 1.27 s as a PVH vmlinux on q35
//     (DESIGN.md). Without ACPI (microvm,acpi=off or -no-acpi) the
//     guest's power-off does not end QEMU (measured): ACPI stays.
//   - Direct boot: the plain and sample handlers give -kernel the
//     uncompressed vmlinux, whose PVH entry note QEMU follows: the ELF is
//     loaded straight into guest memory and entered in 32-bit protected
//     mode, with no real-mode setup and no decompressor (bzImage through
//     SeaBIOS 2.8 s, with qboot 2.5 s, PVH 1.27 s, same kernel, to its
//     no-root panic). To the agent's first answer, interleaved, 5 boots
//     each on a heavily loaded 2-core TCG machine (medians): Debian's
//     kernel through SeaBIOS with its module-loading initramfs 17.7 s,
//     veil's bzImage through qboot 12.0 s, veil's vmlinux through PVH
//     9.5 s; QEMU's PSS at agent-ready 266, 195 and 184 MiB. The driver
//     does not care which: the kernel is the config's
//     (shim/config.DefaultKernel picks by TEE); SNP and TDX boot the
//     bzImage through their firmware, which measures it.
//   - qboot, not SeaBIOS, enters the PVH kernel when QEMU's data
//     directory has it (Debian's qemu-system-data does): it sets up PCI,
//     hands the guest QEMU's ACPI tables and jumps to the kernel, where
//     SeaBIOS also scans for option ROMs and boot devices. Bare boot to
//     agent ready, interleaved, 8 boots each beside other load (load 9),
//     medians: SeaBIOS 2.90 s, qboot 2.50 s; on a quiet machine, 6 each,
//     2.00 s and 1.67 s; the VM and end-to-end tiers
//     (ACPI power-off, hot-plugged disks on the PCIe root ports, pmem,
//     9p, NICs) pass on it. Config.BIOS "default" keeps SeaBIOS.
//   - The console is hvc0 on the virtio-serial bus the agent port needs
//     anyway, written to a pipe the driver copies into console.log, capped
//     and rotated (hypervisor.Console), and hands line by line to the
//     caller: the guest kernel's messages and the agent's log (its stderr
//     is the console). An emulated 8250 UART
//     (ttyS0) traps on every byte: with boot messages on, ttyS0 reached init
//     in 4.2/4.5/6.3 s against hvc0's 2.8/4.0/4.4 s; with quiet the two are
//     level. The cost: messages from before the virtio console probes (a
//     very early panic) are lost; Err still reports QEMU's exit.
//   - panic=-1 with -no-reboot: a guest panic reboots at once, and QEMU exits
//     instead of rebooting, so the host sees it as the VM's death.
//   - A root image (Config.RootImage, plain handlers) instead of the
//     initramfs: virtio-pmem on a read-only, private file mapping. The
//     guest mounts the erofs with DAX, so its files run from the host's
//     page cache of the image, one copy for every VM, where an initramfs
//     is unpacked into each guest's RAM (and the agent copied it into a
//     tmpfs root on top). NVDIMM (-device nvdimm) would do the same but
//     needs an NVDIMM PFN info block in the image and ACPI NFIT; virtio-
//     pmem regions are mapped with struct pages by the guest as they are.
//   - tb-size bounds TCG's translation cache (QEMU's default is 1 GiB).
//   - Free page reporting (ReclaimFreedMemory): a virtio-balloon device
//     with free-page-reporting=on, which the guest's virtio_balloon driver
//     uses to report free 2 MiB blocks, about 2 s after they are freed;
//     QEMU discards them. The guest touches far more at boot than it keeps
//     (the compressed initramfs, freed init code, transient allocations),
//     and a pod's memory peaks (an image pull, a build) would otherwise stay
//     on the host for the VM's life. It is never inflated: no guest memory
//     is taken away. It costs boot time (under TCG about 0.5 s: the guest
//     reports and then touches again memory it churns through at boot), so
//     the shim leaves it off by default.
//   - Transparent huge pages stay on for guest RAM (QEMU asks for them).
//     Off (PR_SET_THP_DISABLE on QEMU), a 2 GiB guest's RAM was 70.4 MiB
//     resident at agent ready instead of 76 MiB, but the boot took 0.4 s
//     longer under TCG (interleaved, 6 each: medians 2.04 s against
//     1.67 s): the guest's first touches became 4 KiB host faults.
//   - 9p passthrough: the share holds container root filesystems prepared by
//     the host (image layers with real owners, modes, setuid bits and device
//     nodes). passthrough shows the guest exactly those and lets runc in the
//     guest chown and mknod for real (QEMU runs as root); mapped-xattr would
//     show the guest other owners than the host's unpacked layers have, and
//     turn device nodes into files. multidevs=remap keeps inode numbers unique
//     when the share spans file systems (overlay snapshot mounts).
//   - The QMP and agent sockets are created by the driver and passed to QEMU
//     as listening fds: they exist before QEMU runs (nothing polls for a path
//     to appear), and once QEMU is gone nothing listens, so a dial fails
//     instead of hanging.
//
// # Block device hotplug
//
// AttachBlock and DetachBlock (hotplug.go) plug host block devices into
// the empty root ports as virtio-blk disks over QMP, and unplug them,
// waiting for the DEVICE_DELETED event (the guest released the disk under
// ACPI hotplug) before removing the block node. The QMP client keeps the
// events it reads during commands for such waits.
//
// # Files in the state dir
//
//	qmp.sock     QMP (the driver keeps one connection)
//	agent.sock   the agent's virtio-serial port (virtio-serial transport)
//	console.log  guest console: kernel messages and the agent's log, capped
//	             (Console.MaxBytes), older lines in console.log.1 ...
//	qemu.log     QEMU's own stdout and stderr
//	qemu.pid     QEMU's pid, written by QEMU
//
// Start removes stale copies first; Cleanup removes them all. Err keeps the
// tails of console.log and qemu.log, read when QEMU exited.
//
// # Process
//
// QEMU runs in its own process group (a terminal's signals to the caller's
// group do not reach it) with Pdeathsig SIGKILL: it dies with the process
// that started it, which for veil is the long-lived per-pod shim, so a VM
// never outlives its shim. A goroutine waits on the process; when QEMU exits
// for any reason Done is closed at once and Err says how (exit status or
// signal) with the log tails.
//
// # Stop sequence
//
// The caller first asks the agent to power off (Shutdown). Stop then waits
// for QEMU to exit until its context is done; then sends QMP quit and waits
// up to 2 s; then SIGKILL. Kill is SIGKILL at once. Cleanup kills QEMU if it
// still runs, closes QMP and removes the state files; Stop, Kill and Cleanup
// may be called more than once.
package qemu
