package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
)

// PageAddOrder is the order in which the host's KVM adds and extends the
// pages of a MR.EXTEND section; it changes MRTD.
type PageAddOrder int

const (
	// SinglePass: each page is added (TDH.MEM.PAGE.ADD) and then its 16
	// chunks are extended (TDH.MR.EXTEND) before the next page. Upstream
	// KVM (Linux 6.16+, KVM_TDX_INIT_MEM_REGION with
	// KVM_TDX_MEASURE_MEMORY_REGION) does this, with QEMU 10.1+, which is
	// what veil-tdx requires. gce-tcb-verifier, td-shim and
	// virtee/tdx-measure compute this order.
	SinglePass PageAddOrder = iota
	// TwoPass: per section, every page is added first, then every chunk
	// is extended. The pre-upstream TDX KVM/QEMU 8.2 stacks did this
	// (the dstack tdx-lite quote, QEMU 8.2.2, matches it).
	TwoPass
)

func (o PageAddOrder) String() string {
	switch o {
	case SinglePass:
		return "single-pass"
	case TwoPass:
		return "two-pass"
	}
	return fmt.Sprintf("PageAddOrder(%d)", int(o))
}

const (
	recordSize  = 128 // the TDX module hashes MRTD in 128-byte blocks
	extendChunk = 256 // TDH.MR.EXTEND measures 256 bytes at a time
)

// MRTD computes the TD's build-time measurement for a firmware image and
// its parsed sections, emulating the TDX module (TDX module ABI spec,
// "TDH.MEM.PAGE.ADD" and "TDH.MR.EXTEND"): MRTD is one SHA-384 over
//
//   - per added page: a 128-byte record "MEM.PAGE.ADD" || 4 zero bytes ||
//     GPA (u64 LE) || 104 zero bytes;
//   - per extended 256-byte chunk: "MR.EXTEND" || 7 zero bytes || GPA (u64 LE)
//     || 104 zero bytes, then the chunk's 256 bytes.
//
// Every page of every section is added except PAGE_AUG sections; MR_EXTEND
// sections are extended with their raw data, zero padded to the memory size
// (QEMU copies the raw bytes into zeroed guest memory). Sections are taken in
// table order.
func MRTD(fw []byte, sections []Section, order PageAddOrder) ([48]byte, error) {
	if order != SinglePass && order != TwoPass {
		return [48]byte{}, fmt.Errorf("computing MRTD: unknown page add order %d", int(order))
	}
	h := sha512.New384()
	for i, s := range sections {
		if err := s.check(len(fw)); err != nil {
			return [48]byte{}, fmt.Errorf("computing MRTD: section %d (%s): %w", i, s.Type, err)
		}
		if s.Attributes&AttrPageAug != 0 {
			continue
		}
		extend := s.Attributes&AttrMRExtend != 0
		pages := s.MemoryDataSize / pageSize
		switch {
		case !extend:
			for p := range pages {
				pageAdd(h, s.MemoryAddress+p*pageSize)
			}
		case order == SinglePass:
			for p := range pages {
				gpa := s.MemoryAddress + p*pageSize
				pageAdd(h, gpa)
				extendPage(h, fw, s, p)
			}
		default:
			for p := range pages {
				pageAdd(h, s.MemoryAddress+p*pageSize)
			}
			for p := range pages {
				extendPage(h, fw, s, p)
			}
		}
	}
	var out [48]byte
	h.Sum(out[:0])
	return out, nil
}

func pageAdd(h hash.Hash, gpa uint64) {
	var rec [recordSize]byte
	copy(rec[:], "MEM.PAGE.ADD")
	binary.LittleEndian.PutUint64(rec[16:], gpa)
	h.Write(rec[:])
}

// extendPage extends page p of section s: 16 chunks of 256 bytes.
func extendPage(h hash.Hash, fw []byte, s Section, p uint64) {
	raw := fw[s.DataOffset : uint64(s.DataOffset)+uint64(s.RawDataSize)]
	var chunk [extendChunk]byte
	for c := uint64(0); c < pageSize/extendChunk; c++ {
		off := p*pageSize + c*extendChunk
		var rec [recordSize]byte
		copy(rec[:], "MR.EXTEND")
		binary.LittleEndian.PutUint64(rec[16:], s.MemoryAddress+off)
		h.Write(rec[:])
		clear(chunk[:])
		if off < uint64(len(raw)) {
			copy(chunk[:], raw[off:])
		}
		h.Write(chunk[:])
	}
}
