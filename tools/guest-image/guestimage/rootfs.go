package guestimage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/tools/guest-image/cpio"
)

// RootfsFile is the read-only root image of the plain handlers: the
// initramfs's tree as an uncompressed erofs, which every pod VM maps from
// the one host file through virtio-pmem with DAX (hypervisor/qemu).
const RootfsFile = "rootfs.erofs"

// RootfsAlign is what the root image's size is padded to. The guest's
// pmem driver maps the device's pages (ZONE_DEVICE) in whole 2 MiB
// subsections: virtio-pmem's region must start and end on that boundary
// or the kernel refuses DAX (memremap_compat_align, drivers/nvdimm).
const RootfsAlign = 2 << 20

// rootfsUUID is the erofs volume UUID: fixed, so the image is reproducible.
const rootfsUUID = "7665696c-726f-6f74-6673-000000000001"

// PadSize is size rounded up to a multiple of RootfsAlign.
func PadSize(size int64) int64 {
	return (size + RootfsAlign - 1) / RootfsAlign * RootfsAlign
}

// WriteRootfs builds an erofs image of entries at out with mkfs.erofs
// (erofs-utils 1.5): uncompressed (DAX maps file pages straight from the
// device, which compressed data cannot be), 4 KiB blocks (mkfs.erofs 1.5
// uses the page size; erofs refuses DAX otherwise), no inline tails
// (noinline_data: erofs gives DAX only to files laid out in whole blocks),
// every file owned by root as in the cpio,
// every timestamp mtime, a fixed UUID and no extended attributes, so the
// same entries give the same bytes. The file is then padded with zeros to
// RootfsAlign (erofs ignores what follows its last block).
func WriteRootfs(ctx context.Context, entries []cpio.Entry, mtime int64, out string) error {
	tree, err := os.MkdirTemp(filepath.Dir(out), ".rootfs-tree-")
	if err != nil {
		return fmt.Errorf("creating the root image's tree: %w", err)
	}
	defer os.RemoveAll(tree)
	if err := materialize(tree, entries); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if _, err := run(ctx, "", nil, "mkfs.erofs", "--quiet", "-T", strconv.FormatInt(mtime, 10),
		"-U", rootfsUUID, "--all-root", "-x", "-1", "-E", "noinline_data", tmp, tree); err != nil {
		return fmt.Errorf("building %s (mkfs.erofs is in Debian's erofs-utils; make deps): %w", RootfsFile, err)
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return fmt.Errorf("reading %s: %w", tmp, err)
	}
	if err := os.Truncate(tmp, PadSize(st.Size())); err != nil {
		return fmt.Errorf("padding %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return nil
}

// materialize writes entries below dir with their exact modes (the umask
// does not apply: each is chmod'ed after it is created).
func materialize(dir string, entries []cpio.Entry) error {
	for _, e := range entries {
		p := filepath.Join(dir, e.Name)
		perm := e.Mode & 0o7777
		var err error
		switch e.Mode & cpio.TypeMask {
		case cpio.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case cpio.TypeRegular:
			err = os.WriteFile(p, e.Data, 0o600)
		case cpio.TypeSymlink:
			err = os.Symlink(string(e.Data), p)
			perm = 0
		case cpio.TypeChar:
			err = unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(e.RdevMajor, e.RdevMinor)))
		default:
			err = fmt.Errorf("entry type %#o is not supported", e.Mode&cpio.TypeMask)
		}
		if err == nil && perm != 0 {
			err = unix.Chmod(p, perm)
		}
		if err != nil {
			return fmt.Errorf("writing %s into the root image's tree: %w", e.Name, err)
		}
	}
	return nil
}
