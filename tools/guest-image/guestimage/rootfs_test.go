package guestimage

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/veil-runtime/veil/tools/guest-image/cpio"
)

func TestPadSize(t *testing.T) {
	for _, c := range []struct{ in, want int64 }{
		{0, 0}, {1, RootfsAlign}, {RootfsAlign, RootfsAlign}, {RootfsAlign + 1, 2 * RootfsAlign}, {31322112, 15 * RootfsAlign},
	} {
		if got := PadSize(c.in); got != c.want {
			t.Errorf("PadSize(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

// TestWriteRootfs builds a small root image twice (from two trees written
// at different times) and checks that the bytes are the
// same, the size is padded, it is an erofs, and fsck.erofs extracts the
// entries with their modes and contents.
func TestWriteRootfs(t *testing.T) {
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Fatalf("mkfs.erofs (erofs-utils) is not installed; make deps installs it: %v", err)
	}
	entries := Entries(Contents{Agent: []byte("agent"), Runc: bytes.Repeat([]byte("r"), 5000), Shell: []byte("sh")})
	dir := t.TempDir()
	var images [2][]byte
	for i := range images {
		out := filepath.Join(dir, "rootfs"+string(rune('a'+i))+".erofs")
		if err := WriteRootfs(context.Background(), entries, 1700000000, out); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		images[i] = b
	}
	img := images[0]
	if !bytes.Equal(img, images[1]) {
		t.Fatal("two builds of the same entries differ")
	}
	if len(img) == 0 || len(img)%RootfsAlign != 0 {
		t.Fatalf("image size %d is not a multiple of %d", len(img), RootfsAlign)
	}
	if magic := binary.LittleEndian.Uint32(img[1024:]); magic != 0xE0F5E1E2 {
		t.Fatalf("erofs magic at 1024 = %#x, want 0xe0f5e1e2", magic)
	}
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		t.Fatalf("fsck.erofs (erofs-utils) is not installed: %v", err)
	}
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("fsck.erofs", "--extract="+x, filepath.Join(dir, "rootfsa.erofs")).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs: %v: %s", err, out)
	}
	for _, e := range entries {
		fi, err := os.Lstat(filepath.Join(x, e.Name))
		if err != nil {
			t.Errorf("entry %s: %v", e.Name, err)
			continue
		}
		if e.Mode&cpio.TypeMask == cpio.TypeRegular {
			b, _ := os.ReadFile(filepath.Join(x, e.Name))
			if !bytes.Equal(b, e.Data) {
				t.Errorf("%s: contents differ", e.Name)
			}
		}
		if e.Mode&cpio.TypeMask != cpio.TypeChar && uint32(fi.Mode().Perm()) != e.Mode&0o777 {
			t.Errorf("%s: mode %v, want %#o", e.Name, fi.Mode(), e.Mode&0o7777)
		}
	}
	if fi, err := os.Stat(filepath.Join(x, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/tmp: %v %v, want sticky", fi, err)
	}
}
