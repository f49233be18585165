package guestimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// GuestModules are the kernel modules the guest needs, by module name;
// their dependencies are added. A module the kernel has built in is skipped.
//
//   - 9p, 9pnet_virtio: the pod's shared directory from the host (virtio-9p)
//   - vmw_vsock_virtio_transport: the agent's vsock transport
//   - virtio_blk, virtio_net: block devices and the pod network
//   - virtio_balloon: free page reporting, so the host gets back memory
//     the guest frees (hypervisor.Config.ReclaimFreedMemory)
//   - overlay: container root filesystems layered in the guest
//   - dm_crypt, xts: encrypted scratch storage (aes-xts-plain64; the guest
//     has no modprobe, so the cipher mode dm-crypt asks for must be loaded)
//   - configfs, tsm: configfs-tsm, the kernel's attestation report
//     interface (/sys/kernel/config/tsm/report); both load on any machine
//   - bridge: Linux bridges made inside a container with CAP_NET_ADMIN
//     (brctl addbr, a CNI plugin in a privileged pod; critest's Privileged
//     and capability cases); without modprobe the kernel's on-demand load
//     of it fails
var GuestModules = []string{
	"9p", "9pnet_virtio",
	"vmw_vsock_virtio_transport",
	"virtio_blk", "virtio_net",
	"virtio_balloon",
	"overlay",
	"dm_crypt", "xts",
	"configfs", "tsm",
	"bridge",
}

// TEEModules are the confidential-computing guest drivers (SEV-SNP, TDX).
// Each refuses to load (ENODEV) outside its TEE, so they are listed apart,
// in TEEModulesListPath, for the agent to try: ENODEV there means "not this
// TEE", not an error. Their dependencies are in GuestModules.
var TEEModules = []string{"sev_guest", "tdx_guest"}

// ModuleName normalises a module name as the kernel does ("dm-mod" and
// "dm_mod" are one module).
func ModuleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// moduleExts are the file name endings of (possibly compressed) modules.
var moduleExts = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// moduleBase splits a module file name into its module name and whether it
// is a module at all.
func moduleBase(file string) (string, bool) {
	for _, ext := range moduleExts {
		if strings.HasSuffix(file, ext) {
			return ModuleName(strings.TrimSuffix(file, ext)), true
		}
	}
	return "", false
}

// ParseBuiltin returns the names of the modules listed in a kernel's
// modules.builtin (one "kernel/.../name.ko" path per line).
func ParseBuiltin(data []byte) map[string]bool {
	builtin := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if name, ok := moduleBase(path.Base(strings.TrimSpace(sc.Text()))); ok {
			builtin[name] = true
		}
	}
	return builtin
}

// ModInfo is what the .modinfo section of a module says about its
// dependencies.
type ModInfo struct {
	// Depends are the modules that must be loaded first (hard dependencies).
	Depends []string
	// SoftPre are modules modprobe would load first if it can ("softdep=pre:").
	SoftPre []string
}

// ParseModInfo parses the contents of a module's .modinfo section: NUL
// separated key=value strings.
func ParseModInfo(section []byte) ModInfo {
	var mi ModInfo
	for _, kv := range bytes.Split(section, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, ModuleName(d))
				}
			}
		case "softdep":
			// "pre: a b post: c"
			inPre := false
			for _, w := range strings.Fields(v) {
				switch w {
				case "pre:":
					inPre = true
				case "post:":
					inPre = false
				default:
					if inPre {
						mi.SoftPre = append(mi.SoftPre, ModuleName(w))
					}
				}
			}
		}
	}
	return mi
}

// LoadOrder returns roots and everything they depend on, each once, every
// module after its dependencies. It visits roots and each module's
// dependencies in the order given, so the result is deterministic. deps
// must have an entry for every module reached.
func LoadOrder(roots []string, deps map[string][]string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var order []string
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("ordering kernel modules: dependency cycle %s", strings.Join(append(chain, name), " -> "))
		}
		d, ok := deps[name]
		if !ok {
			if len(chain) == 0 {
				return fmt.Errorf("ordering kernel modules: module %q not found", name)
			}
			return fmt.Errorf("ordering kernel modules: module %q, needed by %s, not found", name, strings.Join(chain, " <- "))
		}
		state[name] = visiting
		for _, dep := range d {
			if err := visit(dep, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, name)
		return nil
	}
	for _, r := range roots {
		if err := visit(r, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Module is a kernel module chosen for the initramfs.
type Module struct {
	Name string
	// Path is its path in the initramfs, uncompressed:
	// /lib/modules/<release>/kernel/.../<name>.ko.
	Path string
	Data []byte
}

// ResolveModules finds the modules named by want (and their dependencies)
// in an unpacked kernel, decompresses them and returns them in load order.
// Built-in modules are left out and returned as builtin.
func ResolveModules(ctx context.Context, k ExtractedKernel, want []string) (mods []Module, builtin []string, err error) {
	dir := k.ModulesDir()
	bdata, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the kernel's built-in module list: %w", err)
	}
	isBuiltin := ParseBuiltin(bdata)

	files := map[string]string{} // module name -> path relative to dir
	err = filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := moduleBase(d.Name()); ok && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listing kernel modules in %s: %w", dir, err)
	}

	deps := map[string][]string{}
	data := map[string][]byte{}
	var roots []string
	queue := []string{}
	for _, w := range want {
		w = ModuleName(w)
		if isBuiltin[w] {
			builtin = append(builtin, w)
			continue
		}
		if _, ok := files[w]; !ok {
			return nil, nil, fmt.Errorf("finding kernel module %q: kernel %s has it neither built in nor as a module; drop it from GuestModules or pick a kernel that has it", w, k.Release)
		}
		roots = append(roots, w)
		queue = append(queue, w)
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if _, seen := deps[name]; seen {
			continue
		}
		rel, ok := files[name]
		if !ok {
			continue // LoadOrder names the module that needs it
		}
		b, err := readModule(ctx, filepath.Join(dir, rel))
		if err != nil {
			return nil, nil, err
		}
		mi, err := modInfo(b)
		if err != nil {
			return nil, nil, fmt.Errorf("reading module %s: %w", rel, err)
		}
		var d []string
		d = append(d, mi.Depends...)
		for _, s := range mi.SoftPre {
			// Soft dependencies are optional: only modular ones matter.
			if _, ok := files[s]; ok && !isBuiltin[s] {
				d = append(d, s)
			}
		}
		deps[name], data[name] = d, b
		queue = append(queue, d...)
	}
	order, err := LoadOrder(roots, deps)
	if err != nil {
		return nil, nil, err
	}
	for _, name := range order {
		rel := files[name]
		for _, ext := range moduleExts[1:] {
			if strings.HasSuffix(rel, ext) {
				rel = strings.TrimSuffix(rel, ext) + ".ko"
			}
		}
		mods = append(mods, Module{
			Name: name,
			Path: path.Join("/lib/modules", k.Release, filepath.ToSlash(rel)),
			Data: data[name],
		})
	}
	sort.Strings(builtin)
	return mods, builtin, nil
}

// ModulesList is the contents of /etc/veil/modules: one absolute module
// path per line, in load order.
func ModulesList(mods []Module) []byte {
	var b bytes.Buffer
	for _, m := range mods {
		b.WriteString(m.Path)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Without returns mods without the modules also in loaded, keeping order.
func Without(mods, loaded []Module) []Module {
	have := map[string]bool{}
	for _, m := range loaded {
		have[m.Name] = true
	}
	out := []Module{}
	for _, m := range mods {
		if !have[m.Name] {
			out = append(out, m)
		}
	}
	return out
}

func modInfo(ko []byte) (ModInfo, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return ModInfo{}, fmt.Errorf("parsing ELF: %w", err)
	}
	s := f.Section(".modinfo")
	if s == nil {
		return ModInfo{}, fmt.Errorf("no .modinfo section")
	}
	b, err := s.Data()
	if err != nil {
		return ModInfo{}, fmt.Errorf("reading .modinfo: %w", err)
	}
	return ParseModInfo(b), nil
}

// readModule reads a module file, decompressing .xz and .zst with the xz and
// zstd tools and .gz in Go.
func readModule(ctx context.Context, p string) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	switch {
	case strings.HasSuffix(p, ".xz"):
		b, err = run(ctx, "", nil, "xz", "-dc", "--", p)
	case strings.HasSuffix(p, ".zst"):
		b, err = run(ctx, "", nil, "zstd", "-dcq", "--", p)
	case strings.HasSuffix(p, ".gz"):
		var f *os.File
		if f, err = os.Open(p); err == nil {
			defer f.Close()
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(f); err == nil {
				b, err = io.ReadAll(zr)
			}
		}
	default:
		b, err = os.ReadFile(p)
	}
	if err != nil {
		return nil, fmt.Errorf("reading kernel module %s: %w", p, err)
	}
	return b, nil
}
