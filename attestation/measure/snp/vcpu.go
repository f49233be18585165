package snp

import (
	"fmt"
	"sort"
)

// VCPUSig is the CPUID leaf 1 EAX value of a family, model and stepping:
// the value QEMU loads into RDX at reset, and so into each VMSA.
func VCPUSig(family, model, stepping uint32) uint32 {
	var ext uint32
	if family > 0xf {
		ext, family = family-0xf, 0xf
	}
	return (ext&0xff)<<20 | (model>>4&0xf)<<16 | (family&0xf)<<8 | (model&0xf)<<4 | stepping&0xf
}

// cpuModels are QEMU's AMD EPYC CPU models and their family, model and
// stepping (target/i386/cpu.c).
var cpuModels = map[string][3]uint32{
	"EPYC":          {23, 1, 2},
	"EPYC-v1":       {23, 1, 2},
	"EPYC-v2":       {23, 1, 2},
	"EPYC-IBPB":     {23, 1, 2},
	"EPYC-v3":       {23, 1, 2},
	"EPYC-v4":       {23, 1, 2},
	"EPYC-Rome":     {23, 49, 0},
	"EPYC-Rome-v1":  {23, 49, 0},
	"EPYC-Rome-v2":  {23, 49, 0},
	"EPYC-Rome-v3":  {23, 49, 0},
	"EPYC-Milan":    {25, 1, 1},
	"EPYC-Milan-v1": {25, 1, 1},
	"EPYC-Milan-v2": {25, 1, 1},
	"EPYC-Genoa":    {25, 17, 0},
	"EPYC-Genoa-v1": {25, 17, 0},
	"EPYC-Turin":    {26, 0, 0},
}

// CPUModelSig is the vCPU signature of a QEMU CPU model name (EPYC-v4,
// EPYC-Milan, ...).
func CPUModelSig(model string) (uint32, error) {
	f, ok := cpuModels[model]
	if !ok {
		return 0, fmt.Errorf("unknown vCPU model %q (known: %v; for -cpu host give the host's family, model and stepping)", model, CPUModels())
	}
	return VCPUSig(f[0], f[1], f[2]), nil
}

// CPUModels lists the known QEMU CPU model names.
func CPUModels() []string {
	names := make([]string, 0, len(cpuModels))
	for n := range cpuModels {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
