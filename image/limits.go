package image

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/image/unpack"
)

// Limits caps what one pull may take. Guest-pulled images, their blob
// cache and the pod's volume copies all live in tmpfs (/run), that is in
// guest memory, so the caps are there to turn an image that cannot fit
// (or a decompression bomb, or a layer of millions of empty files) into a
// refusal that names the cap, before it has filled the memory the pod's
// containers need. A refusal wraps unpack.ErrLimit and names the
// init-data key that raises the cap.
//
// A zero field takes its default from DefaultLimits.
type Limits struct {
	// LayerBytes caps a layer's uncompressed size (init-data
	// image.max_layer_bytes).
	LayerBytes int64
	// LayerCompressedBytes caps a layer blob as the registry serves it
	// (image.max_layer_compressed_bytes); checked on the manifest's
	// descriptor before the download, which is then held to that size.
	LayerCompressedBytes int64
	// LayerEntries caps the entries (files, directories, links) of a
	// layer (image.max_layer_entries).
	LayerEntries int64
	// ImageBytes caps the sum of an image's uncompressed layers
	// (image.max_image_bytes).
	ImageBytes int64
}

// The init-data keys of the caps, as refusals name them.
const (
	KeyMaxLayerBytes           = "image.max_layer_bytes"
	KeyMaxLayerCompressedBytes = "image.max_layer_compressed_bytes"
	KeyMaxLayerEntries         = "image.max_layer_entries"
	KeyMaxImageBytes           = "image.max_image_bytes"
)

// entryCost is what one empty file costs tmpfs in unreclaimable kernel
// memory, rounded up: measured 752 bytes of shmem_inode_cache and 192 of
// dentry per file (Linux 6.18, 100,000 empty files).
const entryCost = 1 << 10

// fallbackMemory stands for the guest's memory when it cannot be read.
const fallbackMemory = 1 << 30

// DefaultLimits are the caps for a guest with memory bytes of RAM: one
// image (and so any one of its layers, compressed or not) may take a
// quarter of it, and a layer as many entries as cost a quarter of it in
// inodes and dentries (about one per KiB). /run is a tmpfs of half the
// memory (the kernel's default) and also holds the compressed blob cache,
// the pod's other containers' images and the volume copies, so an image
// at the cap still leaves room for them. For the 256 MiB base guest
// (MemTotal 210.7 MiB, measured with the Debian 6.12 guest kernel; 462
// MiB for 512) that is 52.7 MiB and 53,944 entries per image: enough for busybox, alpine, distroless and slim images; a pod
// with bigger images asks for more memory (its memory limit is added to
// the guest) or raises the caps in its init-data.
func DefaultLimits(memory int64) Limits {
	if memory <= 0 {
		memory = fallbackMemory
	}
	q := memory / 4
	return Limits{LayerBytes: q, LayerCompressedBytes: q, LayerEntries: q / entryCost, ImageBytes: q}
}

// withDefaults fills l's zero fields from DefaultLimits(memory).
func (l Limits) withDefaults(memory int64) Limits {
	d := DefaultLimits(memory)
	for _, f := range []struct{ v, def *int64 }{
		{&l.LayerBytes, &d.LayerBytes},
		{&l.LayerCompressedBytes, &d.LayerCompressedBytes},
		{&l.LayerEntries, &d.LayerEntries},
		{&l.ImageBytes, &d.ImageBytes},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return l
}

// layer is the unpack caps of one layer, imageUsed being what the
// image's earlier layers took.
func (l Limits) layer(imageUsed int64) unpack.Limits {
	return unpack.Limits{
		Bytes: []unpack.Cap{
			{Name: KeyMaxLayerBytes, Max: l.LayerBytes},
			{Name: KeyMaxImageBytes, Max: l.ImageBytes, Used: imageUsed},
		},
		Entries: []unpack.Cap{{Name: KeyMaxLayerEntries, Max: l.LayerEntries}},
	}
}

// checkCompressed refuses a layer blob bigger than the compressed cap
// (or of a negative size).
func (l Limits) checkCompressed(size int64) error {
	if size < 0 {
		return fmt.Errorf("blob size %d in the manifest is negative", size)
	}
	if size > l.LayerCompressedBytes {
		return fmt.Errorf("blob is %d bytes: %w", size, &unpack.LimitError{
			Cap:  unpack.Cap{Name: KeyMaxLayerCompressedBytes, Max: l.LayerCompressedBytes},
			Unit: "bytes compressed",
		})
	}
	return nil
}

// GuestMemory is the machine's RAM in bytes (sysinfo(2) totalram), or 0
// when it cannot be read.
func GuestMemory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
