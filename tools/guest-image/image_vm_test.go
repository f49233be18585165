//go:build vm

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/veil-runtime/veil/shim"
	"github.com/veil-runtime/veil/tools/guest-image/guestimage"
)

// options returns build options for the repository this test lives in and
// its download cache (VEIL_CACHE_DIR, else .cache at the repository root).
func options(t *testing.T, out, agent string) guestimage.Options {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("VEIL_CACHE_DIR")
	if cache == "" {
		cache = filepath.Join(repo, ".cache")
	}
	pin, err := guestimage.ParsePin(guestimage.KernelPin)
	if err != nil {
		t.Fatal(err)
	}
	return guestimage.Options{
		OutDir: out, CacheDir: cache, Kernel: pin,
		RepoDir: repo, AgentPackage: agent,
		Runc: "/usr/sbin/runc", RuncPackage: "runc",
		Crun: "/usr/bin/crun", CrunPackage: "crun",
		Compression: guestimage.DefaultCompression,
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// TestBuildIsReproducible builds the real guest image twice, the second time
// with an empty Go build cache so the agent is compiled again, and requires
// byte-identical artifacts whose digests match the manifest. With
// VEIL_KERNEL_REPRO=1 (make test-kernel-repro) the second build also gets an
// empty kernel cache, so the kernel is compiled again in another directory
// (about 16 minutes on 2 idle cores); without it both builds take the kernel
// from the cache, which is what every other build does, and the kernel's own
// reproducibility is left to that target.
func TestBuildIsReproducible(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	a, b := t.TempDir(), t.TempDir()
	if _, err := guestimage.Build(ctx, options(t, a, "./cmd/veil-agent")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOCACHE", t.TempDir())
	ob := options(t, b, "./cmd/veil-agent")
	kernel := "kernel from the cache"
	if os.Getenv("VEIL_KERNEL_REPRO") == "1" {
		ob.KernelBuildCache = t.TempDir()
		kernel = "kernel compiled from scratch"
	}
	start := time.Now()
	m, err := guestimage.Build(ctx, ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second build, %s: %s", kernel, time.Since(start).Round(time.Second))
	var total int64
	for _, name := range []string{guestimage.KernelFile, guestimage.VmlinuxFile, guestimage.InitrdFile, guestimage.RootfsFile, guestimage.ManifestFile} {
		da, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		db, err := os.ReadFile(filepath.Join(b, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(da, db) {
			t.Errorf("%s differs between two builds from the same inputs", name)
		}
		if name == guestimage.ManifestFile {
			continue
		}
		sum := sha256.Sum256(db)
		art := m.Artifacts[name]
		if art.SHA256 != hex.EncodeToString(sum[:]) || art.Size != int64(len(db)) {
			t.Errorf("%s: manifest says %s/%d bytes, file is %x/%d", name, art.SHA256, art.Size, sum, len(db))
		}
		total += int64(len(db))
	}
	checkStrippedPVH(t, filepath.Join(b, guestimage.VmlinuxFile))
	var onDisk guestimage.Manifest
	raw, _ := os.ReadFile(filepath.Join(b, guestimage.ManifestFile))
	if err := json.Unmarshal(raw, &onDisk); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	k := onDisk.Kernel
	if k.DebSHA256 == "" || onDisk.Runc.Version == "" || onDisk.Agent.GoVersion == "" || k.Release == "" ||
		k.FragmentsSHA256 == "" || k.ConfigSHA256 == "" || !strings.HasPrefix(k.Toolchain.GCC, "gcc") || k.Toolchain.Binutils == "" {
		t.Errorf("manifest lacks inputs: %+v", onDisk)
	}
	t.Logf("guest image: %d bytes (vmlinuz %d, vmlinux %d, initrd %d, cpio %d uncompressed), kernel %s by %s", total,
		m.Artifacts[guestimage.KernelFile].Size, m.Artifacts[guestimage.VmlinuxFile].Size,
		m.Artifacts[guestimage.InitrdFile].Size, m.Initramfs.UncompressedSize, k.Release, k.Toolchain.GCC)
}

// checkStrippedPVH checks that the vmlinux QEMU boots has no symbol table
// (QEMU would copy it into every VM's heap), no .init.scratch and no loaded
// segment past the kernel's .brk (QEMU would write zeros there into guest
// RAM), and still has its PVH entry: a Xen ELF note of type
// XEN_ELFNOTE_PHYS32_ENTRY (18).
func checkStrippedPVH(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table", path)
	}
	if f.Section(".init.scratch") != nil {
		t.Errorf("%s has .init.scratch", path)
	}
	brk := f.Section(".brk")
	if brk == nil {
		t.Fatalf("%s has no .brk section", path)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr+p.Memsz > brk.Addr+brk.Size {
			t.Errorf("%s: a loaded segment ends at %#x, past .brk's end %#x", path, p.Vaddr+p.Memsz, brk.Addr+brk.Size)
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			t.Fatal(err)
		}
		for len(notes) >= 12 {
			namesz, descsz, typ := binary.LittleEndian.Uint32(notes), binary.LittleEndian.Uint32(notes[4:]), binary.LittleEndian.Uint32(notes[8:])
			name := notes[12:min(len(notes), 12+int(namesz))]
			if string(bytes.TrimRight(name, "\x00")) == "Xen" && typ == 18 {
				return
			}
			next := 12 + (int(namesz)+3)&^3 + (int(descsz)+3)&^3
			if next > len(notes) {
				break
			}
			notes = notes[next:]
		}
	}
	t.Errorf("%s has no PVH entry note (Xen, type 18)", path)
}

// TestImageBoots boots the image under QEMU with a stand-in /init
// (testdata/smokeinit) that checks the kernel has no module support and
// has built in what the guest uses (9p, overlay, erofs, ext4, vsock,
// virtio-net/blk, device-mapper, iptables, configfs-tsm, cgroup v2), that no
// TEE guest device appears outside a TEE, runs runc and crun from the image,
// and powers off. It boots both kernel files: vmlinux directly through its
// PVH entry (the plain handlers) and the bzImage vmlinuz through the
// firmware (the confidential handlers boot it through theirs).
func TestImageBoots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	m, err := guestimage.Build(ctx, options(t, out, "./tools/guest-image/testdata/smokeinit"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kernel := range []string{guestimage.VmlinuxFile, guestimage.KernelFile} {
		t.Run(kernel, func(t *testing.T) {
			cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
				"-accel", "tcg", "-machine", "q35", "-m", "512", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
				"-kernel", filepath.Join(out, kernel),
				"-initrd", filepath.Join(out, guestimage.InitrdFile),
				"-append", "console=ttyS0 quiet panic=-1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatalf("starting qemu: %v", err)
			}
			var checked []string
			var console strings.Builder
			pass := false
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				console.WriteString(line + "\n")
				if i := strings.Index(line, "smoke: "); i >= 0 {
					msg := line[i+len("smoke: "):]
					switch {
					case strings.HasPrefix(msg, "ok "):
						checked = append(checked, strings.TrimPrefix(msg, "ok "))
					case strings.HasPrefix(msg, "uname "):
						if r := strings.TrimPrefix(msg, "uname "); r != m.Kernel.Release {
							t.Errorf("guest runs kernel %q, manifest says %q", r, m.Kernel.Release)
						}
					case msg == "PASS":
						pass = true
					}
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("qemu: %v\n%s\nconsole:\n%s", err, stderr.String(), console.String())
			}
			if !pass {
				t.Fatalf("the guest did not pass its checks; console:\n%s", console.String())
			}
			t.Logf("booted %s, checked %d things (%s) and powered off in %s", kernel, len(checked),
				strings.Join(checked, ", "), time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestShimFeaturesDescribeGuestRuntimes keeps the shim's OCI features
// document (shim.RuntimeFeatures, what -info tells containerd) true for
// the runtimes this host's image build copies into the guest: their Debian
// versions are the ones it was checked against, and the runc copied (the
// guest's fallback runtime) applies every mount option and runs every hook
// kind it claims, by its own `runc features`. crun 1.8.1 has no `features`
// command; a new crun version fails the first check.
func TestShimFeaturesDescribeGuestRuntimes(t *testing.T) {
	o := options(t, t.TempDir(), "./cmd/veil-agent")
	for pkg, want := range shim.GuestRuntimeVersions {
		out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
		if err != nil {
			t.Fatalf("dpkg-query %s: %v", pkg, err)
		}
		if got := string(out); got != want {
			t.Errorf("the guest image copies %s %s; shim.RuntimeFeatures describes %s %s: check its mount options and hooks against %s %s, then update shim.GuestRuntimeVersions", pkg, got, pkg, want, pkg, got)
		}
	}
	out, err := exec.Command(o.Runc, "features").Output()
	if err != nil {
		t.Fatalf("%s features: %v", o.Runc, err)
	}
	var runc features.Features
	if err := json.Unmarshal(out, &runc); err != nil {
		t.Fatalf("decoding %s features: %v", o.Runc, err)
	}
	f := shim.RuntimeFeatures()
	for _, opt := range f.MountOptions {
		if !slices.Contains(runc.MountOptions, opt) {
			t.Errorf("shim.RuntimeFeatures claims mount option %q, which %s features does not list", opt, o.Runc)
		}
	}
	for _, h := range f.Hooks {
		if !slices.Contains(runc.Hooks, h) {
			t.Errorf("shim.RuntimeFeatures claims hook %q, which %s features does not list", h, o.Runc)
		}
	}
	for _, ns := range f.Linux.Namespaces {
		if !slices.Contains(runc.Linux.Namespaces, ns) {
			t.Errorf("shim.RuntimeFeatures claims namespace %q, which %s features does not list", ns, o.Runc)
		}
	}
}
