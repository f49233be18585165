package guestimage

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// LibrarySearchPath is where shared libraries are looked up on the host, in
// glibc's order for Debian amd64 (without ld.so.cache). The initramfs keeps
// each library in the directory it was found in.
var LibrarySearchPath = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib", "/lib64", "/usr/lib64",
}

// SharedFile is a file a dynamically linked program needs at run time.
type SharedFile struct {
	// Path is where the program looks for it (and where the initramfs puts it).
	Path string
	// Source is the host file with its contents (Path with symlinks resolved).
	Source string
}

// SharedLibraries returns the ELF interpreter and every shared library
// (DT_NEEDED, transitively) that the program at bin needs, resolved against
// root (the host: "/") along searchPath and each object's DT_RUNPATH or
// DT_RPATH, sorted by path. A static program needs nothing.
func SharedLibraries(root, bin string, searchPath []string) ([]SharedFile, error) {
	f, err := elf.Open(path.Join(root, bin))
	if err != nil {
		return nil, fmt.Errorf("reading program %s: %w", bin, err)
	}
	defer f.Close()
	class, machine := f.Class, f.Machine

	var out []SharedFile
	interp, err := interpreter(f)
	if err != nil {
		return nil, fmt.Errorf("reading program %s: %w", bin, err)
	}
	seen := map[string]bool{}
	if interp != "" {
		// The loader is already loaded when libc asks for it by soname.
		seen[path.Base(interp)] = true
		src, err := resolveOnRoot(root, interp)
		if err != nil {
			return nil, fmt.Errorf("finding the ELF interpreter %s of %s: %w", interp, bin, err)
		}
		out = append(out, SharedFile{Path: interp, Source: src})
	}

	queue, err := needed(f, bin)
	if err != nil {
		return nil, err
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if seen[n.soname] {
			continue
		}
		seen[n.soname] = true
		found := false
		for _, dir := range append(n.runpath, searchPath...) {
			p := path.Join(dir, n.soname)
			lib, err := elf.Open(path.Join(root, p))
			if err != nil {
				continue
			}
			if lib.Class != class || lib.Machine != machine {
				lib.Close()
				continue
			}
			more, err := needed(lib, p)
			lib.Close()
			if err != nil {
				return nil, err
			}
			src, err := resolveOnRoot(root, p)
			if err != nil {
				return nil, fmt.Errorf("resolving %s: %w", p, err)
			}
			if !containsPath(out, p) {
				out = append(out, SharedFile{Path: p, Source: src})
			}
			queue = append(queue, more...)
			found = true
			break
		}
		if !found {
			return nil, fmt.Errorf("finding shared library %s needed by %s: not in %s; install the package that provides it", n.soname, n.by, strings.Join(append(n.runpath, searchPath...), ":"))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

type neededLib struct {
	soname, by string
	runpath    []string
}

func needed(f *elf.File, name string) ([]neededLib, error) {
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("reading the libraries %s needs: %w", name, err)
	}
	var rp []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		vals, _ := f.DynString(tag)
		for _, v := range vals {
			for _, d := range strings.Split(v, ":") {
				d = strings.ReplaceAll(d, "$ORIGIN", path.Dir(name))
				if d != "" {
					rp = append(rp, d)
				}
			}
		}
	}
	var out []neededLib
	for _, l := range libs {
		out = append(out, neededLib{soname: l, by: name, runpath: rp})
	}
	return out, nil
}

func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", fmt.Errorf("reading PT_INTERP: %w", err)
		}
		return strings.TrimRight(string(b), "\x00"), nil
	}
	return "", nil
}

// resolveOnRoot resolves symlinks in p as if root were "/".
func resolveOnRoot(root, p string) (string, error) {
	cur := "/"
	rest := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	for hops := 0; len(rest) > 0; {
		next := path.Join(cur, rest[0])
		rest = rest[1:]
		fi, err := os.Lstat(path.Join(root, next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("too many symlinks in %s", p)
		}
		target, err := os.Readlink(path.Join(root, next))
		if err != nil {
			return "", err
		}
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		rest = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur = "/"
	}
	return path.Join(root, cur), nil
}

func containsPath(files []SharedFile, p string) bool {
	for _, f := range files {
		if f.Path == p {
			return true
		}
	}
	return false
}

// UnionLibraries merges the shared files of several programs: each path
// once, sorted by path.
func UnionLibraries(lists ...[]SharedFile) []SharedFile {
	seen := map[string]SharedFile{}
	for _, l := range lists {
		for _, f := range l {
			seen[f.Path] = f
		}
	}
	out := make([]SharedFile, 0, len(seen))
	for _, f := range seen {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
