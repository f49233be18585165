package hypervisor

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// TestConsoleLogIsCapped pins issue 15's "console.log grows without bound
// in /run": a guest writing 100 KiB through a 4 KiB x 2 log leaves at most
// 8 KiB on disk, the newest lines last.
func TestConsoleLogIsCapped(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "console.log")
	r, err := NewRotatingFile(p, 4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		fmt.Fprintf(r, "guest line %05d .........................\n", i)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var total int64
	var names []string
	for _, e := range ents {
		fi, _ := e.Info()
		total += fi.Size()
		names = append(names, e.Name())
		if fi.Size() > 4096 {
			t.Errorf("%s is %d bytes, over the 4096 cap", e.Name(), fi.Size())
		}
	}
	if strings.Join(names, " ") != "console.log console.log.1" || total > 8192 {
		t.Fatalf("files %v, %d bytes; want console.log and console.log.1, at most 8192", names, total)
	}
	tail := ConsoleTail(p, 8192)
	if !strings.HasSuffix(tail, "guest line 01999 .........................\n") {
		t.Errorf("tail does not end with the newest line: %q", tail[max(0, len(tail)-80):])
	}
	if !strings.Contains(tail, "guest line 01950") {
		t.Error("tail lacks lines from the rotated file")
	}
}

func TestConsoleLogOneFileAndHugeWrites(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "console.log")
	r, err := NewRotatingFile(p, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("a", 2500) + strings.Repeat("z", 500)
	if n, err := r.Write([]byte(big)); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	r.Close()
	b, _ := os.ReadFile(p)
	if string(b) != big[2000:] {
		t.Errorf("one-file log after a 3000-byte write: %d bytes %q..., want its last 1000", len(b), b[:min(10, len(b))])
	}
	if _, err := os.Stat(p + ".1"); !os.IsNotExist(err) {
		t.Errorf("files = 1 kept %s.1: %v", p, err)
	}
	if got := RotatedFiles(p, 3); strings.Join(got, " ") != p+" "+p+".1 "+p+".2" {
		t.Errorf("RotatedFiles = %v", got)
	}
}

// CopyConsole gives whole lines in order, whatever the reads' sizes: CR LF
// ends a line, an over-long line comes in MaxConsoleLine pieces, a last
// line without newline still arrives.
func TestCopyConsoleLines(t *testing.T) {
	long := strings.Repeat("x", MaxConsoleLine+10)
	in := "first\r\nsecond\n" + long + "\nlast without newline"
	var got []string
	var out strings.Builder
	if err := CopyConsole(iotest.OneByteReader(strings.NewReader(in)), &out, func(l string) { got = append(got, l) }); err != nil {
		t.Fatal(err)
	}
	want := []string{"first", "second", long[:MaxConsoleLine], long[MaxConsoleLine:], "last without newline"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("lines = %q, want %q", got, want)
	}
	if out.String() != in {
		t.Error("the log did not get the console byte for byte")
	}
	if err := CopyConsole(iotest.ErrReader(io.ErrUnexpectedEOF), io.Discard, nil); err == nil {
		t.Error("a read error was not returned")
	}
}

// TestDeathLines: the lines that say why a guest died are picked out of a
// console whose tail is a panic's stack, in their order and at most max; a
// clean console has none.
func TestDeathLines(t *testing.T) {
	console := strings.Join([]string{
		`time=2026-12-07T20:26:37.827Z level=INFO msg="moved the initramfs into a tmpfs root"`,
		`time=2026-12-07T20:26:38.827Z level=ERROR msg="fatal: powering off" c=veil-agent err="mounting /proc: EPERM"`,
		`fatal error: unexpected signal during runtime execution`,
		`[signal SIGBUS: bus error code=0x2 addr=0x4a1000 pc=0x4a1000]`,
		`goroutine 1 gp=0xc000002380 m=0 mp=0x8e1c80 [running]:`,
		`[    1.46] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200`,
		`[    1.46] Call Trace:`,
		`[    1.46]  ? 0xffffffff810c829e`,
		"panic: " + strings.Repeat("x", 300),
	}, "\n")
	got := DeathLines(console, 10)
	want := []string{
		`time=2026-12-07T20:26:38.827Z level=ERROR msg="fatal: powering off" c=veil-agent err="mounting /proc: EPERM"`,
		`fatal error: unexpected signal during runtime execution`,
		`[signal SIGBUS: bus error code=0x2 addr=0x4a1000 pc=0x4a1000]`,
		`[    1.46] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200`,
		"panic: " + strings.Repeat("x", maxDeathLine-len("panic: ")) + "...",
	}
	if !slices.Equal(got, want) {
		t.Errorf("DeathLines:\n%q\nwant:\n%q", got, want)
	}
	if got := DeathLines(console, 2); !slices.Equal(got, want[:2]) {
		t.Errorf("DeathLines(max 2) = %q, want %q", got, want[:2])
	}
	// A cut between characters, not inside one.
	if got := DeathLines("panic: "+strings.Repeat("é", 200), 1); len(got) != 1 || !utf8.ValidString(got[0]) || !strings.HasSuffix(got[0], "é...") {
		t.Errorf("DeathLines cut a character: %q", got)
	}
	if got := DeathLines("time=... level=INFO msg=ready\n[    1.2] virtio_blk virtio1: [vda] 2048 512-byte logical blocks\n", 3); got != nil {
		t.Errorf("DeathLines of a clean console = %q, want none", got)
	}
}
