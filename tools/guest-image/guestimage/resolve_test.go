package guestimage

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeKO returns a minimal ELF relocatable object whose only section is a
// .modinfo with the given key=value strings.
func fakeKO(t *testing.T, modinfo ...string) []byte {
	t.Helper()
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	infoOff := uint64(64)
	strOff := infoOff + uint64(len(info))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: 64, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, h)
	b.Write(info)
	b.Write(shstr)
	b.Write(make([]byte, shOff-uint64(b.Len())))
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: infoOff, Size: uint64(len(info)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

func TestFakeKOHasModInfo(t *testing.T) {
	mi, err := modInfo(fakeKO(t, "depends=a,b", "name=x"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mi.Depends, []string{"a", "b"}) {
		t.Fatalf("depends %q", mi.Depends)
	}
}

// TestResolveModules builds a fake unpacked kernel with xz-compressed and
// plain modules and checks what ResolveModules picks, in what order, under
// which paths, and that it decompresses.
func TestResolveModules(t *testing.T) {
	root := t.TempDir()
	k := ExtractedKernel{Root: root, Release: "6.12.0-test"}
	dir := k.ModulesDir()
	write := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	xz := func(b []byte) []byte {
		cmd := exec.Command("xz", "-c", "--check=crc32")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("xz: %v", err)
		}
		return out
	}
	ko9p := fakeKO(t, "depends=9pnet,netfs", "softdep=pre: crc32c_generic builtin_pre")
	write("modules.builtin", []byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/lib/builtin_pre.ko\n"))
	write("kernel/fs/9p/9p.ko.xz", xz(ko9p))
	write("kernel/net/9p/9pnet.ko.xz", xz(fakeKO(t, "depends=")))
	write("kernel/fs/netfs/netfs.ko", fakeKO(t, "depends="))
	write("kernel/crypto/crc32c_generic.ko.xz", xz(fakeKO(t, "depends=")))
	write("kernel/drivers/md/dm-crypt.ko.xz", xz(fakeKO(t, "depends=dm-mod")))
	write("kernel/drivers/md/dm-mod.ko.xz", xz(fakeKO(t, "depends=")))
	write("kernel/unused/unused.ko.xz", xz(fakeKO(t, "depends=")))

	mods, builtin, err := ResolveModules(context.Background(), k, []string{"9p", "virtio_pci", "dm-crypt"})
	if err != nil {
		t.Fatal(err)
	}
	var names, paths []string
	for _, m := range mods {
		names, paths = append(names, m.Name), append(paths, m.Path)
	}
	if want := []string{"9pnet", "netfs", "crc32c_generic", "9p", "dm_mod", "dm_crypt"}; !reflect.DeepEqual(names, want) {
		t.Errorf("modules %q, want %q", names, want)
	}
	if want := "/lib/modules/6.12.0-test/kernel/fs/9p/9p.ko"; paths[3] != want {
		t.Errorf("9p path %q, want %q (uncompressed name)", paths[3], want)
	}
	if want := "/lib/modules/6.12.0-test/kernel/drivers/md/dm-mod.ko"; paths[4] != want {
		t.Errorf("dm_mod path %q, want %q (file name kept)", paths[4], want)
	}
	if !bytes.Equal(mods[3].Data, ko9p) {
		t.Error("9p.ko.xz not decompressed")
	}
	if !reflect.DeepEqual(builtin, []string{"virtio_pci"}) {
		t.Errorf("builtin %q, want [virtio_pci]", builtin)
	}

	_, _, err = ResolveModules(context.Background(), k, []string{"vsock"})
	if err == nil || !strings.Contains(err.Error(), `"vsock"`) || !strings.Contains(err.Error(), "neither built in nor as a module") {
		t.Errorf("missing module: %v", err)
	}
}

func TestSharedLibrariesOfHostShell(t *testing.T) {
	libs, err := SharedLibraries("/", "/bin/sh", LibrarySearchPath)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, l := range libs {
		paths = append(paths, l.Path)
		if fi, err := os.Lstat(l.Source); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: source %s is not a regular file (%v)", l.Path, l.Source, err)
		}
	}
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("libraries of /bin/sh: %q, want %q (libc's own ld-linux need is the interpreter, not a second copy)", paths, want)
	}
}

func TestSharedLibrariesMissing(t *testing.T) {
	root := t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/sh"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), sh, 0o755)
	}
	// The interpreter through a symlinked /lib64, as on merged-/usr systems.
	os.MkdirAll(filepath.Join(root, "usr/lib64"), 0o755)
	os.Symlink("usr/lib64", filepath.Join(root, "lib64"))
	os.WriteFile(filepath.Join(root, "usr/lib64/ld-linux-x86-64.so.2"), []byte("x"), 0o755)

	_, err = SharedLibraries(root, "/bin/sh", LibrarySearchPath)
	if err == nil || !strings.Contains(err.Error(), "libc.so.6") || !strings.Contains(err.Error(), "/bin/sh") {
		t.Fatalf("got %v, want an error naming libc.so.6 and /bin/sh", err)
	}
	src, err := resolveOnRoot(root, "/lib64/ld-linux-x86-64.so.2")
	if err != nil || src != filepath.Join(root, "usr/lib64/ld-linux-x86-64.so.2") {
		t.Errorf("resolveOnRoot = %q, %v", src, err)
	}
}

func TestCompressionIsDeterministicAndReversible(t *testing.T) {
	data := bytes.Repeat([]byte("veil guest initramfs "), 50000)
	decompress := map[Compression][]string{
		CompressZstd: {"zstd", "-dcq"},
		CompressXZ:   {"xz", "-dc"},
		CompressLZ4:  {"lz4", "-dc"},
		CompressGzip: {"gzip", "-dc"},
	}
	for c, dec := range decompress {
		t.Run(string(c), func(t *testing.T) {
			a, tool, err := compress(context.Background(), c, data)
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := compress(context.Background(), c, data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Error("two compressions differ")
			}
			if len(a) >= len(data)/10 {
				t.Errorf("compressed %d bytes to %d", len(data), len(a))
			}
			if tool == "" {
				t.Error("no compressor description")
			}
			cmd := exec.Command(dec[0], dec[1:]...)
			cmd.Stdin = bytes.NewReader(a)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Errorf("%s does not give the data back (%v)", dec[0], err)
			}
		})
	}
	if _, err := ParseCompression("bzip2"); err == nil {
		t.Error("bzip2 accepted")
	}
}
