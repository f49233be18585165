package main

import (
	"strings"
	"testing"

	"github.com/veil-runtime/veil/tools/bench/report"
)

// An excerpt of a veil QEMU's smaps under TCG: its binary, a library, the
// heap, TCG's 64 MiB code buffer (executable, less a guard page), 2048 MiB
// of guest RAM, a 2 MiB anonymous buffer, the root image.
const qemuSmaps = `55d0c4a00000-55d0c4f00000 r-xp 00000000 08:01 1234   /usr/bin/qemu-system-x86_64
Size:               5120 kB
Rss:                4000 kB
Pss:                 400 kB
7f1000000000-7f1000100000 r-xp 00000000 08:01 99     /usr/lib/x86_64-linux-gnu/libglib-2.0.so.0
Pss:                 100 kB
55d0c6000000-55d0c7000000 rw-p 00000000 00:00 0      [heap]
Pss:                8000 kB
7f2000000000-7f2003fff000 rwxp 00000000 00:00 0 
Pss:               56000 kB
7f3000000000-7f3080000000 rw-p 00000000 00:00 0 
Pss:               70000 kB
7f4000000000-7f4000200000 rw-p 00000000 00:00 0 
Pss:                 300 kB
7f5000000000-7f5004000000 r--s 00000000 08:01 777    /usr/share/veil/guest/rootfs.erofs
Pss:                1500 kB
`

func TestClassifySmapsSplitsQEMUsMemory(t *testing.T) {
	got, err := classifySmaps(strings.NewReader(qemuSmaps), vmLayout{guestMiB: 2048, tcgMiB: 64, rootImage: "rootfs.erofs"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{
		report.PartFiles:     500 << 10,
		report.PartQEMUHeap:  8300 << 10,
		report.PartTCG:       56000 << 10,
		report.PartGuestRAM:  70000 << 10,
		report.PartRootImage: 1500 << 10,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d KiB, want %d KiB (all: %v)", k, got[k]>>10, v>>10, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("parts %v, want %v", got, want)
	}
	// Without a TCG cache in the layout (KVM), nothing is counted as one.
	kvm, err := classifySmaps(strings.NewReader(qemuSmaps), vmLayout{guestMiB: 2048, rootImage: "rootfs.erofs"})
	if err != nil {
		t.Fatal(err)
	}
	if kvm[report.PartTCG] != 0 || kvm[report.PartQEMUHeap] != (8300+56000)<<10 {
		t.Errorf("without TCG: %v", kvm)
	}
}

func TestClassifySmapsRefusesGarbage(t *testing.T) {
	if _, err := classifySmaps(strings.NewReader("Pss: 4 kB\n"), vmLayout{}); err == nil {
		t.Error("a Pss line before any mapping was accepted")
	}
	if _, err := classifySmaps(strings.NewReader("zz-10 rw-p 0 00:00 0\nPss: 4 kB\n"), vmLayout{}); err == nil {
		t.Error("a mapping line with a bad address range was accepted")
	}
}

// A veil-dev QEMU boots the initrd: QEMU maps initrd.img (fw_cfg hands it
// to the guest) and there is no root image.
const devSmaps = `55d0c4a00000-55d0c4f00000 r-xp 00000000 08:01 1234   /usr/bin/qemu-system-x86_64
Pss:                 400 kB
7f2000000000-7f2003fff000 rwxp 00000000 00:00 0 
Pss:               56000 kB
7f3000000000-7f3080000000 rw-p 00000000 00:00 0 
Pss:               90000 kB
7f6000000000-7f6000e10000 r--p 00000000 08:01 778    /work/veil/build/guest/initrd.img
Pss:               14400 kB
`

func TestClassifySmapsInitrd(t *testing.T) {
	got, err := classifySmaps(strings.NewReader(devSmaps), vmLayout{guestMiB: 2048, tcgMiB: 64, initrd: "initrd.img"})
	if err != nil {
		t.Fatal(err)
	}
	if got[report.PartInitrd] != 14400<<10 || got[report.PartFiles] != 400<<10 || got[report.PartGuestRAM] != 90000<<10 {
		t.Errorf("parts %v: want the initrd's 14400 KiB apart from QEMU's files", got)
	}
	if _, ok := got[report.PartRootImage]; ok {
		t.Errorf("a root image part in a VM that boots the initrd: %v", got)
	}
}
