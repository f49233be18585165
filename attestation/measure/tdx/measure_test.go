package tdx

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func baseInputs(t *testing.T) Inputs {
	initrd := make([]byte, 8192)
	for i := range initrd {
		initrd[i] = byte(i)
	}
	return Inputs{
		Firmware:    cleanExample(t),
		Kernel:      syntheticBzImage(0),
		Initrd:      initrd,
		Cmdline:     "console=hvc0 veil.tee=tdx",
		MemoryBytes: 2 << 30,
		ACPI: &ACPIDigests{
			TableLoader: d48(t, liteACPILoader), RSDP: d48(t, liteACPIRSDP), Tables: d48(t, liteACPITables),
		},
	}
}

// TestMeasure: Measure puts the vector-checked pieces together. With the
// CleanExample firmware (the dstack OVMF's TD_HOB/TEMP_MEM layout) at
// 2 GiB and the dstack ACPI digests, every RTMR0 event but the CFV is the
// one the dstack hardware log holds, and the RTMR1 events after the
// kernel's are too.
func TestMeasure(t *testing.T) {
	in := baseInputs(t)
	v, err := Measure(in)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(v.MRTD[:]) != "6e540be4917f24f74cc3292b59803d06dc7c38eb4a3c1fd6be9c735ba74bb7a23e25f98da94779d17508b243e4fb582b" {
		t.Errorf("MRTD %x, want gce_CleanTdxExampleMeasurement_single_pass", v.MRTD)
	}
	if !v.RTMR0Known {
		t.Error("RTMR0 not computed although ACPI digests were given")
	}
	_, log := loadLiteFixture(t)
	var hw [4][]string
	for _, e := range log {
		hw[e.IMR] = append(hw[e.IMR], e.Digest)
	}
	var ours [4][][48]byte
	for _, e := range v.Events {
		ours[e.Register] = append(ours[e.Register], e.Digest)
	}
	if len(ours[0]) != 13 || len(ours[1]) != 5 || len(ours[2]) != 2 || len(ours[3]) != 0 {
		t.Fatalf("event counts %d/%d/%d/%d, want 13/5/2/0", len(ours[0]), len(ours[1]), len(ours[2]), len(ours[3]))
	}
	for i, d := range ours[0] {
		if i == 1 { // the CFV: CleanExample's, not the dstack OVMF's
			continue
		}
		if hex.EncodeToString(d[:]) != hw[0][i] {
			t.Errorf("RTMR0 event %d: %x, hardware log %s", i, d, hw[0][i])
		}
	}
	for i := 1; i < 5; i++ {
		if hex.EncodeToString(ours[1][i][:]) != hw[1][i] {
			t.Errorf("RTMR1 event %d: %x, hardware log %s", i, ours[1][i], hw[1][i])
		}
	}
	secs, _ := ParseTDVF(in.Firmware)
	cfv, _ := CFVDigest(in.Firmware, secs)
	if ours[0][1] != cfv || cfv != sha384(in.Firmware[0:0x20000]) {
		t.Errorf("CFV event %x, want SHA-384 of the CFV section (file 0..0x20000)", ours[0][1])
	}
	kd, _ := KernelDigest(in.Kernel, in.Cmdline, uint64(len(in.Initrd)), true, in.MemoryBytes)
	if ours[1][0] != kd {
		t.Errorf("kernel event %x, want %x", ours[1][0], kd)
	}
	if ours[2][0] != CmdlineDigest(in.Cmdline, true) || ours[2][1] != sha384(in.Initrd) {
		t.Error("RTMR2 events are not the command line and initrd digests")
	}
	replayed, _ := Replay(v.Events)
	if replayed != v.RTMR || v.RTMR[3] != [48]byte{} {
		t.Errorf("RTMRs %x are not the replayed log (RTMR3 must stay zero)", v.RTMR)
	}

	in.ACPI = nil
	noACPI, err := Measure(in)
	if err != nil {
		t.Fatal(err)
	}
	if noACPI.RTMR0Known || noACPI.RTMR[0] != [48]byte{} || noACPI.Events[0].Register != 1 {
		t.Error("without ACPI digests RTMR0 must be left unknown and zero")
	}
	if noACPI.MRTD != v.MRTD || noACPI.RTMR[1] != v.RTMR[1] || noACPI.RTMR[2] != v.RTMR[2] {
		t.Error("leaving out the ACPI digests changed MRTD, RTMR1 or RTMR2")
	}
}

// TestMeasureDependencies pins what each value depends on (the table in
// the package documentation): change one input, see which values move.
func TestMeasureDependencies(t *testing.T) {
	base := baseInputs(t)
	ref, err := Measure(base)
	if err != nil {
		t.Fatal(err)
	}
	type moved struct{ mrtd, r0, r1, r2 bool }
	for _, c := range []struct {
		name   string
		change func(*Inputs)
		want   moved
	}{
		// RAM below 4 GiB (where QEMU puts the initrd) is 2 GiB for both.
		{"memory 2 -> 4 GiB: only the HOB", func(in *Inputs) { in.MemoryBytes = 4 << 30 }, moved{r0: true}},
		{"memory 2 -> 1 GiB: HOB and initrd address", func(in *Inputs) { in.MemoryBytes = 1 << 30 }, moved{r0: true, r1: true}},
		{"command line", func(in *Inputs) { in.Cmdline += " quiet" }, moved{r2: true}},
		{"initrd content, same size", func(in *Inputs) { in.Initrd = bytes.Clone(in.Initrd); in.Initrd[0] ^= 1 }, moved{r2: true}},
		{"initrd size", func(in *Inputs) { in.Initrd = append(bytes.Clone(in.Initrd), make([]byte, 8192)...) }, moved{r1: true, r2: true}},
		{"no initrd", func(in *Inputs) { in.Initrd = nil }, moved{r1: true, r2: true}},
		{"kernel section byte", func(in *Inputs) { in.Kernel = bytes.Clone(in.Kernel); in.Kernel[0x1800] ^= 1 }, moved{r1: true}},
		{"ACPI tables", func(in *Inputs) { a := *in.ACPI; a.Tables[0] ^= 1; in.ACPI = &a }, moved{r0: true}},
		{"two-pass host", func(in *Inputs) { in.PageAddOrder = TwoPass }, moved{mrtd: true}},
		{"BFV byte", func(in *Inputs) { in.Firmware = bytes.Clone(in.Firmware); in.Firmware[0x30000] ^= 1 }, moved{mrtd: true}},
		{"CFV byte", func(in *Inputs) { in.Firmware = bytes.Clone(in.Firmware); in.Firmware[0x100] ^= 1 }, moved{r0: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			from, in := ref, base
			c.change(&in)
			v, err := Measure(in)
			if err != nil {
				t.Fatal(err)
			}
			got := moved{v.MRTD != from.MRTD, v.RTMR[0] != from.RTMR[0], v.RTMR[1] != from.RTMR[1], v.RTMR[2] != from.RTMR[2]}
			if got != c.want {
				t.Errorf("changed (MRTD, RTMR0, RTMR1, RTMR2) = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestMeasureRefuses(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*Inputs)
		want   string
	}{
		{"SNP-only OVMF", func(in *Inputs) { in.Firmware = make([]byte, 4096) }, "measuring the firmware"},
		{"vmlinux instead of bzImage", func(in *Inputs) { in.Kernel = []byte("\x7fELF") }, "measuring the kernel"},
		{"no memory", func(in *Inputs) { in.MemoryBytes = 0 }, "memory size"},
		{"memory below the firmware's sections", func(in *Inputs) { in.MemoryBytes = 8 << 20 }, "TD HOB"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := baseInputs(t)
			c.change(&in)
			if _, err := Measure(in); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
