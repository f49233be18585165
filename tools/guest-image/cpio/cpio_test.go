package cpio

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func sample() []Entry {
	return []Entry{
		{Name: "usr/bin/runc", Mode: TypeRegular | 0o755, Data: []byte("#!runc\n")},
		{Name: "init", Mode: TypeRegular | 0o755, Data: []byte("agent-bytes-of-odd-length")},
		{Name: "usr", Mode: TypeDir | 0o755},
		{Name: "usr/bin", Mode: TypeDir | 0o755},
		{Name: "dev", Mode: TypeDir | 0o755},
		{Name: "dev/console", Mode: TypeChar | 0o600, RdevMajor: 5, RdevMinor: 1},
		{Name: "lib64", Mode: TypeSymlink | 0o777, Data: []byte("usr/lib64")},
		{Name: "empty", Mode: TypeRegular | 0o644},
		{Name: "x", Mode: TypeRegular | 0o644, Data: []byte("abc")},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, sample(), 1700000000); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
		if e.Mtime != 1700000000 {
			t.Errorf("%s: mtime %d, want 1700000000", e.Name, e.Mtime)
		}
	}
	want := "dev dev/console empty init lib64 usr usr/bin usr/bin/runc x"
	if strings.Join(names, " ") != want {
		t.Fatalf("names %q, want %q (sorted)", strings.Join(names, " "), want)
	}
	for _, w := range sample() {
		e, err := Find(got, w.Name)
		if err != nil {
			t.Fatal(err)
		}
		if e.Mode != w.Mode || !bytes.Equal(e.Data, w.Data) || e.RdevMajor != w.RdevMajor || e.RdevMinor != w.RdevMinor {
			t.Errorf("%s: got mode %#o data %q rdev %d:%d, want mode %#o data %q rdev %d:%d",
				w.Name, e.Mode, e.Data, e.RdevMajor, e.RdevMinor, w.Mode, w.Data, w.RdevMajor, w.RdevMinor)
		}
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	a, b := sample(), sample()
	// Reverse b: the input order must not matter.
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	var ba, bb bytes.Buffer
	if err := Write(&ba, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := Write(&bb, b, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ba.Bytes(), bb.Bytes()) {
		t.Fatal("same entries in another order give a different archive")
	}
	if ba.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-byte aligned", ba.Len())
	}
}

// TestSystemCpioReadsArchive checks the archive with GNU cpio, an
// independent reader: names, owners, sizes and a file's contents.
func TestSystemCpioReadsArchive(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, sample(), 0); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "-v", "--quiet", "--numeric-uid-gid")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(sample()) {
		t.Fatalf("cpio lists %d entries, want %d:\n%s", len(lines), len(sample()), out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if f[2] != "0" || f[3] != "0" {
			t.Errorf("entry not owned by 0:0: %s", l)
		}
	}
	if !strings.Contains(string(out), "usr/bin/runc") || !strings.Contains(string(out), "lib64 -> usr/lib64") {
		t.Errorf("cpio listing lacks runc or the symlink:\n%s", out)
	}
	cmd = exec.Command("cpio", "-i", "--to-stdout", "--quiet", "init")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("cpio -i init: %v", err)
	}
	if string(out) != "agent-bytes-of-odd-length" {
		t.Errorf("cpio extracts init as %q", out)
	}
}

func TestWriteRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"missing parent", []Entry{{Name: "a/b", Mode: TypeRegular}}, "no parent directory"},
		{"duplicate", []Entry{{Name: "a", Mode: TypeRegular}, {Name: "/a", Mode: TypeRegular}}, "appears twice"},
		{"escape", []Entry{{Name: "../a", Mode: TypeRegular}}, "not a path inside"},
		{"root", []Entry{{Name: "/", Mode: TypeDir}}, "not a path inside"},
		{"fifo", []Entry{{Name: "p", Mode: 0o010644}}, "unsupported mode"},
		{"dir with data", []Entry{{Name: "d", Mode: TypeDir, Data: []byte("x")}}, "has data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(&bytes.Buffer{}, tc.entries, 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
