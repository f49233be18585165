package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"
)

// Layout of the synthetic bzImage the kernel tests build: a PE32+ image
// (as a Linux EFI-stub bzImage is) whose headers hold the x86 setup
// header, with two sections listed out of file order and trailing data.
const (
	synPE        = 0x80
	synOpt       = synPE + 24
	synChecksum  = synOpt + 64
	synCertDir   = synOpt + 112 + 4*8
	synSecTable  = synOpt + 240
	synHeaders   = 0x1000
	synImageSize = 0x3000
)

func syntheticBzImage(trailing int) []byte {
	b := make([]byte, synImageSize+trailing)
	for i := range b {
		b[i] = byte(i * 7)
	}
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], synPE)
	copy(b[synPE:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[synPE+4:], 0x8664) // machine
	binary.LittleEndian.PutUint16(b[synPE+6:], 2)      // sections
	binary.LittleEndian.PutUint16(b[synPE+20:], 240)   // optional header size
	binary.LittleEndian.PutUint16(b[synOpt:], peOptMagicPE32Plus)
	binary.LittleEndian.PutUint32(b[synOpt+60:], synHeaders)
	binary.LittleEndian.PutUint32(b[synChecksum:], 0x12345678)
	binary.LittleEndian.PutUint32(b[synOpt+108:], 16) // NumberOfRvaAndSizes
	binary.LittleEndian.PutUint64(b[synCertDir:], 0)  // no certificate table
	for i, s := range []struct{ ptr, size uint32 }{{0x2000, 0x1000}, {0x1000, 0x1000}} {
		e := b[synSecTable+40*i:]
		copy(e, ".sec")
		binary.LittleEndian.PutUint32(e[16:], s.size)
		binary.LittleEndian.PutUint32(e[20:], s.ptr)
	}
	// x86 setup header: 7 setup sectors, boot protocol 2.15, loaded high,
	// initrd_addr_max 0x7fffffff, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G.
	b[hdrSetupSects] = 7
	copy(b[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(b[hdrVersion:], 0x20f)
	b[hdrTypeOfLoader] = 0
	b[hdrLoadflags] = loadedHigh
	binary.LittleEndian.PutUint32(b[hdrRamdiskImage:], 0)
	binary.LittleEndian.PutUint32(b[hdrRamdiskSize:], 0)
	binary.LittleEndian.PutUint32(b[hdrHeapEndPtr:], 0)
	binary.LittleEndian.PutUint32(b[hdrCmdLinePtr:], 0)
	binary.LittleEndian.PutUint32(b[hdrInitrdMax:], 0x7fffffff)
	binary.LittleEndian.PutUint16(b[hdrXloadflags:], 0x3)
	return b
}

// TestPEImageDigest: the digest covers the headers without CheckSum and
// the certificate directory entry, the sections in file order, and the
// trailing bytes up to the certificate table.
func TestPEImageDigest(t *testing.T) {
	img := syntheticBzImage(0x100)
	got, err := PEImageDigest(img)
	if err != nil {
		t.Fatal(err)
	}
	want := sha384(img[:synChecksum], img[synChecksum+4:synCertDir], img[synCertDir+8:synHeaders],
		img[0x1000:0x2000], img[0x2000:0x3000], img[0x3000:])
	if got != want {
		t.Fatalf("digest %x, want %x", got, want)
	}
	// An independent implementation: osslsigncode 2.9
	// (`osslsigncode extract-data -h sha384 -in <this image>`, the
	// SpcIndirectDataContent digest) printed this for the same bytes.
	// (It also agrees with PEImageDigest on Debian's 6.12.107 bzImage,
	// e74a0b29...16d1b8, which is too large to keep here.)
	const osslsigncode = "10e28670040b6121bc9f912a3bdfa172c469aad716ce169b1e6d9fe2fac0aed8a65b45786c01d70198c5443a9c42ba90"
	if hex.EncodeToString(got[:]) != osslsigncode {
		t.Fatalf("digest %x, want osslsigncode's %s", got, osslsigncode)
	}

	// The excluded fields do not matter; section bytes do.
	c := bytes.Clone(img)
	binary.LittleEndian.PutUint32(c[synChecksum:], 0)
	if d, _ := PEImageDigest(c); d != got {
		t.Error("the CheckSum field changed the digest")
	}
	c[0x1800] ^= 1
	if d, _ := PEImageDigest(c); d == got {
		t.Error("a section byte did not change the digest")
	}
	// A certificate table at the end is left out.
	signed := append(bytes.Clone(img), make([]byte, 0x80)...)
	binary.LittleEndian.PutUint32(signed[synCertDir:], uint32(len(img)))
	binary.LittleEndian.PutUint32(signed[synCertDir+4:], 0x80)
	if d, err := PEImageDigest(signed); err != nil || d != got {
		t.Errorf("appending a certificate table changed the digest (%v)", err)
	}
	for _, bad := range []struct {
		name string
		img  []byte
		want string
	}{
		{"no PE signature", func() []byte { c := bytes.Clone(img); c[synPE] = 'X'; return c }(), "no PE signature"},
		{"section past the end", img[:0x2800], "outside"},
		{"bad magic", func() []byte { c := bytes.Clone(img); c[synOpt] = 0; return c }(), "magic"},
	} {
		if _, err := PEImageDigest(bad.img); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: got %v, want an error containing %q", bad.name, err, bad.want)
		}
	}
}

// TestQEMUPatchedKernel checks each setup-header field QEMU writes
// (x86_load_linux), for the memory sizes where the initrd address changes.
func TestQEMUPatchedKernel(t *testing.T) {
	const initrd = 0x123456
	for _, c := range []struct {
		name       string
		memory     uint64
		protocol   uint16
		xlf        uint16
		wantInitrd uint32
	}{
		// XLF_CAN_BE_LOADED_ABOVE_4G: initrd_max 4 GiB - 1, clamped to RAM
		// below 4 GiB minus QEMU's 0x28000 of ACPI data.
		{"2GiB", 2 << 30, 0x20f, 0x3, (0x80000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		{"1GiB", 1 << 30, 0x20f, 0x3, (0x40000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		// Below 0xB0000000 all RAM is below 4 GiB.
		{"2.5GiB", 0xA0000000, 0x20f, 0x3, (0xA0000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		// From 0xB0000000 on, q35 keeps 2 GiB below 4 GiB.
		{"3GiB", 3 << 30, 0x20f, 0x3, (0x80000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		{"16GiB", 16 << 30, 0x20f, 0x3, (0x80000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		// Without the flag, initrd_addr_max (0x7fffffff) and the same clamp.
		{"no XLF 1GiB", 1 << 30, 0x20f, 0x1, (0x40000000 - 0x28000 - 1 - initrd) &^ 0xfff},
		// Protocol 2.02 has no initrd_addr_max: 0x37ffffff.
		{"protocol 2.02", 2 << 30, 0x202, 0, (0x37ffffff - initrd) &^ 0xfff},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := syntheticBzImage(0)
			binary.LittleEndian.PutUint16(k[hdrVersion:], c.protocol)
			binary.LittleEndian.PutUint16(k[hdrXloadflags:], c.xlf)
			got, err := QEMUPatchedKernel(k, "console=hvc0", initrd, true, c.memory)
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(k)
			want[hdrTypeOfLoader] = 0xB0
			want[hdrLoadflags] |= 0x80
			binary.LittleEndian.PutUint16(want[hdrHeapEndPtr:], 0x20000-0x10000-0x200)
			binary.LittleEndian.PutUint32(want[hdrCmdLinePtr:], 0x20000)
			binary.LittleEndian.PutUint32(want[hdrRamdiskImage:], c.wantInitrd)
			binary.LittleEndian.PutUint32(want[hdrRamdiskSize:], initrd)
			if !bytes.Equal(got, want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("byte %#x: got %#x, want %#x (ramdisk_image %#x, want %#x)", i, got[i], want[i],
							binary.LittleEndian.Uint32(got[hdrRamdiskImage:]), c.wantInitrd)
					}
				}
			}
			if bytes.Equal(k[hdrTypeOfLoader:hdrTypeOfLoader+1], got[hdrTypeOfLoader:hdrTypeOfLoader+1]) {
				t.Error("the input was not copied before patching")
			}
		})
	}
	t.Run("no initrd leaves the ramdisk fields", func(t *testing.T) {
		k := syntheticBzImage(0)
		got, err := QEMUPatchedKernel(k, "", 0, false, 2<<30)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[hdrRamdiskImage:hdrRamdiskSize+4], k[hdrRamdiskImage:hdrRamdiskSize+4]) {
			t.Errorf("ramdisk fields %x, want them untouched", got[hdrRamdiskImage:hdrRamdiskSize+4])
		}
	})
	for _, bad := range []struct {
		name    string
		kernel  []byte
		cmdline string
		initrd  uint64
		want    string
	}{
		{"not a bzImage", make([]byte, 0x1000), "", 0, "not a bzImage"},
		{"vga=", syntheticBzImage(0), "vga=791", 0, "vga="},
		{"initrd too big", syntheticBzImage(0), "", 0x80000000, "does not fit"},
	} {
		if _, err := QEMUPatchedKernel(bad.kernel, bad.cmdline, bad.initrd, true, 2<<30); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: got %v, want an error containing %q", bad.name, err, bad.want)
		}
	}
}

func TestKernelDigestIsPatchedImageDigest(t *testing.T) {
	k := syntheticBzImage(0x40)
	got, err := KernelDigest(k, "console=hvc0", 4096, true, 2<<30)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := QEMUPatchedKernel(k, "console=hvc0", 4096, true, 2<<30)
	want, _ := PEImageDigest(p)
	if got != want {
		t.Fatalf("%x, want %x", got, want)
	}
	plain, _ := PEImageDigest(k)
	if got == plain {
		t.Fatal("the kernel digest ignores QEMU's patches")
	}
}
