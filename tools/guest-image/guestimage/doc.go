// Package guestimage builds veil's guest image: veil's own kernel, the
// initramfs the guest runs from, and a manifest describing both.
//
// The kernel is built from a pinned Debian source package (KernelPin,
// linux-source-6.12), fetched with apt-get into the cache once, with the
// config fragments in tools/guest-image/kernel on top of `make tinyconfig`
// and `make kvm_guest.config` (kbuild.go): everything built in, no module
// support. BuildKernel checks that every option a fragment asks for
// survived olddefconfig, builds reproducibly (fixed build time, user, host
// and version; in-tree) and keeps the result in the cache under a digest of
// its inputs (source package, fragments, gcc and binutils versions), so it
// is compiled again only when one of them changes. It yields two files of
// one kernel: vmlinuz (bzImage, with the EFI stub, for firmware boot) and
// vmlinux (uncompressed ELF with the PVH entry, for direct boot). The
// initramfs is a deterministic newc cpio archive (package cpio),
// lz4-compressed, holding:
//
//	/init                        the veil agent, static, built reproducibly
//	/usr/bin/crun                the host's crun (Debian package), the default OCI runtime
//	/usr/bin/runc                the host's runc (Debian package)
//	/bin/sh                      static busybox (busybox-static), the debug console's shell
//	/lib64/ld-linux-x86-64.so.2  their ELF interpreter
//	/lib/x86_64-linux-gnu/*.so.* runc's and crun's shared libraries (DT_NEEDED, transitively)
//	/dev/console                 the kernel's console, for /init's stdio
//	/proc /sys /dev /tmp /run /etc /sbin /root  empty mount points and dirs
//
// The same tree is also written as rootfs.erofs (rootfs.go): an
// uncompressed erofs with 4 KiB blocks and no inline tails, padded to
// 2 MiB, which the plain handlers' VMs map read-only from the one host
// file through virtio-pmem and mount as / with DAX, so its pages are the
// host's page cache, shared by every VM, instead of a private copy in each.
// No NVDIMM PFN info block is written in front of it: virtio-pmem regions
// are ND_REGION_PAGEMAP, so the guest's pmem driver maps the raw namespace
// with struct pages in guest RAM (as an fsdax namespace in "ram" mode
// would) and offers DAX without one (drivers/nvdimm pmem_should_map_pages,
// checked on Linux 6.12: /proc/mounts shows dax=always).
//
// Build writes vmlinuz, vmlinux, initrd.img, rootfs.erofs and manifest.json; the same
// inputs (kernel source package, fragments, toolchain, agent source, Go
// toolchain, runc, crun and library packages, compressor version,
// SOURCE_DATE_EPOCH) give byte-identical outputs. The manifest records all
// of those inputs and every output's sha256 and size, from which
// confidential launches compute their expected measurements.
package guestimage
