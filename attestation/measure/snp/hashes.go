package snp

import (
	"crypto/sha256"
	"encoding/binary"
)

// KernelHashes are the SHA-256 digests QEMU puts in the SEV hash table for
// direct kernel boot (kernel-hashes=on): OVMF checks the kernel, initrd
// and command line it loads against them, and the platform measures the
// table.
type KernelHashes struct {
	Cmdline, Initrd, Kernel [sha256.Size]byte
}

// HashKernel hashes the boot artifacts as QEMU does: the command line with
// its terminating NUL (an empty one is a lone NUL), an absent initrd as the
// empty string.
func HashKernel(kernel, initrd []byte, cmdline string) KernelHashes {
	return KernelHashes{
		Cmdline: sha256.Sum256(append([]byte(cmdline), 0)),
		Initrd:  sha256.Sum256(initrd),
		Kernel:  sha256.Sum256(kernel),
	}
}

// HashTableSize is the SEV hash table's length, 168 bytes, padded to 16.
const HashTableSize = 176

// hashTableLen is the table's own length field: the header and three
// entries.
const hashTableLen = 16 + 2 + 3*(16+2+32)

// Table is QEMU's SevHashTable, zero padded to HashTableSize:
//
//	GUID header, u16 168,
//	{GUID cmdline, u16 50, sha256}, {GUID initrd, ...}, {GUID kernel, ...}
func (h KernelHashes) Table() [HashTableSize]byte {
	var t [HashTableSize]byte
	g := guidBytes(guidHashTableHeader)
	copy(t[0:], g[:])
	binary.LittleEndian.PutUint16(t[16:], hashTableLen)
	off := 18
	for _, e := range []struct {
		guid string
		hash [32]byte
	}{{guidCmdlineEntry, h.Cmdline}, {guidInitrdEntry, h.Initrd}, {guidKernelEntry, h.Kernel}} {
		g := guidBytes(e.guid)
		copy(t[off:], g[:])
		binary.LittleEndian.PutUint16(t[off+16:], 16+2+32)
		copy(t[off+18:], e.hash[:])
		off += 16 + 2 + 32
	}
	return t
}
