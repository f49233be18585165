// Package guestimage builds veil's guest image: the kernel, the initramfs
// the guest runs from, and a manifest describing both.
//
// The kernel is a pinned Debian package (KernelPin), fetched with apt-get
// into the cache once and reused from there; its sha256 goes into the
// manifest. To bump it, change KernelPin (README.md says how to try a
// version first); when the pinned version has left the archive, FetchKernel
// fails naming the versions that are there. The initramfs is a
// deterministic newc cpio archive (package cpio), lz4-compressed, holding:
//
//	/init                        the veil agent, static, built reproducibly
//	/usr/bin/crun                the host's crun (Debian package), the default OCI runtime
//	/usr/bin/runc                the host's runc (Debian package)
//	/bin/sh                      static busybox (busybox-static), the debug console's shell
//	/lib64/ld-linux-x86-64.so.2  their ELF interpreter
//	/lib/x86_64-linux-gnu/*.so.* runc's and crun's shared libraries (DT_NEEDED, transitively)
//	/lib/modules/<release>/...   the GuestModules and their dependencies, uncompressed
//	/etc/veil/modules            module paths in load order (the agent loads them)
//	/etc/veil/modules-tee        TEE guest drivers, same format; ENODEV off-TEE
//	/dev/console                 the kernel's console, for /init's stdio
//	/proc /sys /dev /tmp /run /etc /sbin /root  empty mount points and dirs
//
// Build writes vmlinuz, initrd.img and manifest.json; the same inputs (kernel
// package, agent source, Go toolchain, runc, crun and library packages, compressor
// version, SOURCE_DATE_EPOCH) give byte-identical outputs. The manifest
// records all of those inputs and every output's sha256 and size, from which
// confidential launches compute their expected measurements.
package guestimage
