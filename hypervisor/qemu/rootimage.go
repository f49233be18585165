package qemu

import (
	"fmt"
	"os"
	"strconv"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
	"github.com/veil-runtime/veil/hypervisor"
)

// RootImageAlign is the size a root image must be a multiple of: the
// guest maps a pmem region's pages in whole 2 MiB subsections and refuses
// DAX on a region whose end is not aligned (Linux drivers/nvdimm,
// memremap_compat_align). tools/guest-image pads rootfs.erofs to it.
const RootImageAlign = 2 << 20

// rootImageID is the memory backend (and the virtio-pmem device) of the
// root image.
const rootImageID = "rootimg"

// RootImageKernelArgs mount the virtio-pmem root image as / and start the
// agent from it: the guest's pmem driver names the first pmem namespace
// pmem0; erofs with dax maps file pages straight from the device (no guest
// page cache copy); ro because the device is read-only; and init= because
// without an initramfs the kernel looks for /sbin/init, /etc/init,
// /bin/init and /bin/sh, never /init.
var RootImageKernelArgs = []string{"root=/dev/pmem0", "rootfstype=erofs", "rootflags=dax", "ro", "init=" + wire.AgentPath}

// checkRootImage checks cfg.RootImage (when set) and returns its size: a
// regular file, a non-zero multiple of RootImageAlign, not with an initrd
// (the initramfs would be the root and root= ignored) and not for a TEE
// guest (its root must be the measured initramfs).
func checkRootImage(cfg hypervisor.Config) (int64, error) {
	if cfg.RootImage == "" {
		return 0, nil
	}
	if cfg.Initrd != "" {
		return 0, fmt.Errorf("checking vm config: Initrd (%s) and RootImage (%s) are both set; a VM boots from one", cfg.Initrd, cfg.RootImage)
	}
	if cfg.TEE.Kind != hypervisor.TEENone && cfg.TEE.Kind != "" {
		return 0, fmt.Errorf("checking vm config: RootImage is set for a %s guest, whose root must be its measured initramfs", cfg.TEE.Kind)
	}
	fi, err := os.Stat(cfg.RootImage)
	if err != nil {
		return 0, fmt.Errorf("checking guest root image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("checking guest root image %s: not a regular file", cfg.RootImage)
	}
	if fi.Size() == 0 || fi.Size()%RootImageAlign != 0 {
		return 0, fmt.Errorf("checking guest root image %s: size %d is not a non-zero multiple of %d (tools/guest-image pads rootfs.erofs)", cfg.RootImage, fi.Size(), RootImageAlign)
	}
	return fi.Size(), nil
}

// memoryArg is the -m value: the RAM size, and with a root image the one
// memory slot and the maximum that virtio-pmem's region needs (QEMU places
// it in the device memory area, above RAM, whose size is maxmem - RAM).
func memoryArg(l Launch) string {
	m := strconv.FormatUint(uint64(l.MemoryMiB), 10) + "M"
	if l.RootImage == "" {
		return m
	}
	return fmt.Sprintf("%s,slots=1,maxmem=%dM", m, uint64(l.MemoryMiB)+uint64(l.RootImageBytes>>20))
}

// rootImageArgs map the root image into the guest as a virtio-pmem
// device: a file memory backend, read-only (QEMU opens the file O_RDONLY
// and maps it PROT_READ) and private (share=off: MAP_PRIVATE, so nothing
// the guest does reaches the file). Its pages are the host's page cache of
// the file, the same pages in every VM that maps it; with DAX the guest
// runs the files from them instead of copying them into its own memory.
func rootImageArgs(l Launch) []string {
	if l.RootImage == "" {
		return nil
	}
	return []string{
		"-object", fmt.Sprintf("memory-backend-file,id=%s,mem-path=%s,size=%d,readonly=on,share=off", rootImageID, escapeOpt(l.RootImage), l.RootImageBytes),
		"-device", "virtio-pmem-pci,memdev=" + rootImageID + ",id=" + rootImageID + "0",
	}
}
