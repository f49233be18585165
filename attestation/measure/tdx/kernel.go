package tdx

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
)

// Linux x86 boot protocol offsets (Documentation/arch/x86/boot.rst) that
// QEMU reads or writes.
const (
	hdrSetupSects   = 0x1f1
	hdrMagic        = 0x202 // "HdrS"
	hdrVersion      = 0x206
	hdrTypeOfLoader = 0x210
	hdrLoadflags    = 0x211
	hdrRamdiskImage = 0x218
	hdrRamdiskSize  = 0x21c
	hdrHeapEndPtr   = 0x224
	hdrCmdLinePtr   = 0x228
	hdrInitrdMax    = 0x22c
	hdrXloadflags   = 0x236
	hdrEnd          = 0x238

	loadedHigh             = 0x01
	canUseHeap             = 0x80
	xlfCanBeLoadedAbove4G  = 0x02
	qemuLoaderType         = 0xB0
	qemuACPIDataSize       = 0x20000 + 0x8000 // pcmc->acpi_data_size of the pc/q35 machines
	defaultSetupSects      = 4
	oldCmdlineMagic        = 0xA33F
	oldCmdlineMagicOffset  = 0x20
	oldCmdlineOffsetOffset = 0x22
)

// QEMUPatchedKernel returns the bzImage as QEMU hands it to the firmware
// for -kernel/-initrd/-append (QEMU hw/i386/x86-common.c x86_load_linux,
// unchanged in this respect from 8.2 to 10.x): the setup header gets
// type_of_loader 0xB0, CAN_USE_HEAP and heap_end_ptr, cmd_line_ptr, and
// with an initrd its size and the address QEMU places it at: below
// min(initrd_addr_max, or 4 GiB - 1 when XLF_CAN_BE_LOADED_ABOVE_4G is set,
// and RAM below 4 GiB - 0x28000 - 1), rounded down to a page. OVMF
// reassembles setup and kernel into one file, so these bytes are what
// TDVF measures. The initrd address makes the result depend on the memory
// size (below 4 GiB) and the initrd size.
//
// A command line with "vga=" (QEMU writes the video mode into the header)
// is refused rather than modelled.
func QEMUPatchedKernel(kernel []byte, cmdline string, initrdSize uint64, haveInitrd bool, memorySize uint64) ([]byte, error) {
	if len(kernel) < hdrEnd || string(kernel[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("patching the kernel as QEMU does: not a bzImage (no \"HdrS\" setup header at %#x)", hdrMagic)
	}
	if strings.Contains(cmdline, "vga=") {
		return nil, fmt.Errorf("patching the kernel as QEMU does: the command line sets vga=, which QEMU writes into the setup header; not modelled, remove it")
	}
	k := bytes.Clone(kernel)
	protocol := binary.LittleEndian.Uint16(k[hdrVersion:])
	setup := int(k[hdrSetupSects])
	if setup == 0 {
		setup = defaultSetupSects
	}
	if (setup+1)*512 > len(k) {
		return nil, fmt.Errorf("patching the kernel as QEMU does: setup (%d sectors) is larger than the %d-byte file", setup, len(k))
	}

	cmdlineSize := uint32(len(cmdline)+16) &^ 15
	var realAddr, cmdlineAddr uint32
	switch {
	case protocol < 0x200 || k[hdrLoadflags]&loadedHigh == 0, protocol < 0x202:
		realAddr, cmdlineAddr = 0x90000, 0x9a000-cmdlineSize
	default:
		realAddr, cmdlineAddr = 0x10000, 0x20000
	}

	var initrdMax uint32
	switch {
	case protocol >= 0x20c && binary.LittleEndian.Uint16(k[hdrXloadflags:])&xlfCanBeLoadedAbove4G != 0:
		initrdMax = 0xFFFFFFFF
	case protocol >= 0x203:
		initrdMax = binary.LittleEndian.Uint32(k[hdrInitrdMax:])
	default:
		initrdMax = 0x37ffffff
	}
	below, _ := belowAbove4G(memorySize)
	if below <= qemuACPIDataSize {
		return nil, fmt.Errorf("patching the kernel as QEMU does: memory size %d is too small", memorySize)
	}
	if uint64(initrdMax) >= below-qemuACPIDataSize {
		initrdMax = uint32(below - qemuACPIDataSize - 1)
	}

	if protocol >= 0x202 {
		binary.LittleEndian.PutUint32(k[hdrCmdLinePtr:], cmdlineAddr)
	} else {
		binary.LittleEndian.PutUint16(k[oldCmdlineMagicOffset:], oldCmdlineMagic)
		binary.LittleEndian.PutUint16(k[oldCmdlineOffsetOffset:], uint16(cmdlineAddr-realAddr))
	}
	if protocol >= 0x200 {
		k[hdrTypeOfLoader] = qemuLoaderType
	}
	if protocol >= 0x201 {
		k[hdrLoadflags] |= canUseHeap
		binary.LittleEndian.PutUint16(k[hdrHeapEndPtr:], uint16(cmdlineAddr-realAddr-0x200))
	}
	if haveInitrd {
		if protocol < 0x200 {
			return nil, fmt.Errorf("patching the kernel as QEMU does: boot protocol %#x is too old for an initrd", protocol)
		}
		if initrdSize >= uint64(initrdMax) {
			return nil, fmt.Errorf("patching the kernel as QEMU does: initrd of %d bytes does not fit below %#x", initrdSize, initrdMax)
		}
		addr := (initrdMax - uint32(initrdSize)) &^ 4095
		binary.LittleEndian.PutUint32(k[hdrRamdiskImage:], addr)
		binary.LittleEndian.PutUint32(k[hdrRamdiskSize:], uint32(initrdSize))
	}
	return k, nil
}

// PE/COFF layout (Microsoft PE format specification).
const (
	peOptMagicPE32     = 0x10b
	peOptMagicPE32Plus = 0x20b
	peDirSecurity      = 4
)

// PEImageDigest is the SHA-384 digest EDK2's measured boot logs for a
// PE/COFF image it loads (SecurityPkg MeasureBootPeCoff.c, the
// Authenticode image hash): the headers without the CheckSum field and the
// certificate-table directory entry, then each section's raw data in
// PointerToRawData order, then whatever follows the hashed bytes up to the
// end of the file minus the certificate table. As in EDK2 the trailing part
// starts at SizeOfHeaders plus the sum of the section sizes.
func PEImageDigest(img []byte) ([48]byte, error) {
	fail := func(format string, a ...any) ([48]byte, error) {
		return [48]byte{}, fmt.Errorf("hashing the PE image: "+format, a...)
	}
	u16 := func(off uint64) (uint16, bool) {
		if off+2 > uint64(len(img)) {
			return 0, false
		}
		return binary.LittleEndian.Uint16(img[off:]), true
	}
	u32 := func(off uint64) (uint32, bool) {
		if off+4 > uint64(len(img)) {
			return 0, false
		}
		return binary.LittleEndian.Uint32(img[off:]), true
	}
	var pe uint64
	if m, _ := u16(0); m == 0x5A4D { // "MZ"
		v, ok := u32(0x3c)
		if !ok {
			return fail("truncated DOS header")
		}
		pe = uint64(v)
	}
	if sig, ok := u32(pe); !ok || sig != 0x00004550 {
		return fail("no PE signature at %#x", pe)
	}
	coff := pe + 4
	nsec, ok1 := u16(coff + 2)
	optSize, ok2 := u16(coff + 16)
	opt := coff + 20
	magic, ok3 := u16(opt)
	if !ok1 || !ok2 || !ok3 {
		return fail("truncated COFF header")
	}
	var nrvaOff, dirOff uint64
	switch magic {
	case peOptMagicPE32:
		nrvaOff, dirOff = opt+92, opt+96
	case peOptMagicPE32Plus:
		nrvaOff, dirOff = opt+108, opt+112
	default:
		return fail("optional header magic %#x", magic)
	}
	checksum := opt + 64
	headers, ok1 := u32(opt + 60)
	nrva, ok2 := u32(nrvaOff)
	if !ok1 || !ok2 || uint64(headers) > uint64(len(img)) || uint64(headers) < dirOff {
		return fail("SizeOfHeaders %#x does not fit the %d-byte file", headers, len(img))
	}
	h := sha512.New384()
	h.Write(img[:checksum])
	var certSize uint32
	if nrva <= peDirSecurity {
		h.Write(img[checksum+4 : headers])
	} else {
		cert := dirOff + peDirSecurity*8
		if cert+8 > uint64(headers) {
			return fail("certificate directory entry at %#x is outside the headers", cert)
		}
		certSize = binary.LittleEndian.Uint32(img[cert+4:])
		h.Write(img[checksum+4 : cert])
		h.Write(img[cert+8 : headers])
	}

	type sec struct{ ptr, size uint32 }
	table := opt + uint64(optSize)
	var secs []sec
	for i := range uint64(nsec) {
		s := table + i*40
		size, ok1 := u32(s + 16)
		ptr, ok2 := u32(s + 20)
		if !ok1 || !ok2 {
			return fail("section table entry %d is outside the file", i)
		}
		if size == 0 {
			continue
		}
		if uint64(ptr)+uint64(size) > uint64(len(img)) {
			return fail("section %d data %#x+%#x is outside the %d-byte file", i, ptr, size, len(img))
		}
		secs = append(secs, sec{ptr, size})
	}
	sort.SliceStable(secs, func(i, j int) bool { return secs[i].ptr < secs[j].ptr })
	hashed := uint64(headers)
	for _, s := range secs {
		h.Write(img[s.ptr : uint64(s.ptr)+uint64(s.size)])
		hashed += uint64(s.size)
	}
	if n := uint64(len(img)); n > hashed {
		switch {
		case n > hashed+uint64(certSize):
			h.Write(img[hashed : n-uint64(certSize)])
		case n < hashed+uint64(certSize):
			return fail("certificate table of %d bytes does not fit after the sections", certSize)
		}
	}
	var d [48]byte
	h.Sum(d[:0])
	return d, nil
}

// KernelDigest is the RTMR1 digest of a direct-booted kernel: the PE image
// digest of the bzImage after QEMU's setup-header patches.
func KernelDigest(kernel []byte, cmdline string, initrdSize uint64, haveInitrd bool, memorySize uint64) ([48]byte, error) {
	k, err := QEMUPatchedKernel(kernel, cmdline, initrdSize, haveInitrd, memorySize)
	if err != nil {
		return [48]byte{}, err
	}
	return PEImageDigest(k)
}
