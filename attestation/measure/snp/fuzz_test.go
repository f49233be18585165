package snp

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseMetadata feeds firmware images to the footer and metadata
// parser: it must never panic, and whatever it accepts must measure or be
// refused with an error.
func FuzzParseMetadata(f *testing.F) {
	for _, name := range []string{"sev-snp-measure/ovmf_AmdSev_suffix.bin", "dstack/synthetic_snp_ovmf.bin", "gce-tcb-verifier/clean_example_0x1000.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, fw []byte) {
		m, err := ParseMetadata(fw)
		if err != nil {
			return
		}
		for _, s := range m.Sections {
			if s.Size > 1<<20 {
				return // a huge zero section is valid, only slow
			}
		}
		h := HashKernel(nil, nil, "")
		_, _ = Launch{Metadata: m, Kernel: &h, VCPUs: 2, VMM: VMMQEMU}.Digest()
	})
}
