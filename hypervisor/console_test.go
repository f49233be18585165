package hypervisor

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
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
