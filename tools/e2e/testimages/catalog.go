package testimages

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Sources are the host files the images are made of.
type Sources struct {
	// Busybox is Debian's dynamically linked busybox (package "busybox",
	// unpacked by tools/deps.sh into .cache/debs/busybox). It execs applets
	// as separate processes, so tests can see them in ps and /proc.
	Busybox string
	// StaticBusybox is Debian's busybox-static (/bin/busybox). It runs many
	// applets inside the calling shell.
	StaticBusybox string
	// Pause, Webserver and NoNewPrivs are the project's static test
	// programs (tools/e2e/pause, tools/e2e/webserver, tools/e2e/nonewprivs).
	Pause, Webserver, NoNewPrivs string
	// LibDirs are searched, in order, for the shared libraries Busybox needs.
	LibDirs []string
}

// DefaultLibDirs are where Debian 12 keeps libc and the dynamic loader.
var DefaultLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"}

// Names of the images the e2e scenarios use.
const (
	BusyboxImage       = "busybox:latest"
	StaticBusyboxImage = "busybox:static"
	PauseImage         = "pause:3.10"
)

const passwd = `root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
`

const group = `root:x:0:
www-data:x:33:
users:x:100:
nogroup:x:65534:
`

// pgrep and ipcs stand in for applets Debian's busybox builds leave out and
// critest runs inside its containers.
const pgrep = `#!/bin/sh
# pgrep PATTERN: the PIDs whose process name matches the extended regular
# expression PATTERN (a stand-in: Debian's busybox has no pgrep).
[ $# -eq 1 ] || { echo "usage: pgrep PATTERN" >&2; exit 2; }
rc=1
for d in /proc/[0-9]*; do
	pid=${d#/proc/}
	[ "$pid" = "$$" ] && continue
	read -r comm <"$d/comm" 2>/dev/null || continue
	if echo "$comm" | grep -qE -- "$1"; then echo "$pid"; rc=0; fi
done
exit $rc
`

const ipcs = `#!/bin/sh
# ipcs [-m|-q|-s]: System V IPC objects as the kernel lists them in
# /proc/sysvipc (a stand-in: Debian's busybox has no ipcs).
case "${1:--m}" in
-m) exec cat /proc/sysvipc/shm ;;
-q) exec cat /proc/sysvipc/msg ;;
-s) exec cat /proc/sysvipc/sem ;;
esac
echo "ipcs: unsupported option $1" >&2
exit 2
`

// baseEntries is the skeleton every busybox image starts from.
func baseEntries(passwdText, groupText string) []Entry {
	return []Entry{
		Dir("bin", 0o755), Dir("sbin", 0o755), Dir("usr/bin", 0o755), Dir("usr/sbin", 0o755),
		Dir("etc", 0o755), Dir("proc", 0o555), Dir("sys", 0o555), Dir("dev", 0o755),
		Dir("root", 0o700), Dir("tmp", 0o1777), Dir("var/www", 0o755), Dir("home", 0o755),
		File("etc/passwd", 0o644, []byte(passwdText)),
		File("etc/group", 0o644, []byte(groupText)),
		File("etc/nsswitch.conf", 0o644, []byte("passwd: files\ngroup: files\nhosts: files dns\n")),
		File("usr/bin/pgrep", 0o755, []byte(pgrep)),
		File("usr/bin/ipcs", 0o755, []byte(ipcs)),
	}
}

// AppletLinks turns the output of `busybox --list-full` into hard links to
// binary (a path inside the image). The binary's own path is left out.
func AppletLinks(list, binary string) []Entry {
	var out []Entry
	seen := map[string]bool{binary: true}
	for _, line := range strings.Split(list, "\n") {
		p := strings.Trim(strings.TrimSpace(line), "/")
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, Entry{Path: p, Mode: 0o755, Hardlink: binary})
	}
	return out
}

// busyboxEntries returns the busybox binary, its applet links and, for a
// dynamic binary, its shared libraries.
func busyboxEntries(bin string, libDirs []string) ([]Entry, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	list, err := exec.Command(bin, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing applets of %s: %w", bin, err)
	}
	entries := append([]Entry{File("bin/busybox", 0o755, data)}, AppletLinks(string(list), "bin/busybox")...)
	libs, err := sharedLibraries(bin, libDirs)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		e, err := hostFile(l.host, l.image)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

type library struct{ host, image string }

// sharedLibraries returns the ELF interpreter and every library bin needs,
// transitively, found in libDirs. A static binary needs none.
func sharedLibraries(bin string, libDirs []string) ([]library, error) {
	found := map[string]library{}
	var walk func(file string) error
	walk = func(file string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("reading ELF file %s: %w", file, err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("reading interpreter of %s: %w", file, err)
			}
			interp := strings.TrimRight(string(b), "\x00")
			found[interp] = library{host: interp, image: strings.TrimPrefix(interp, "/")}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("reading libraries of %s: %w", file, err)
		}
		for _, n := range needed {
			if _, ok := found[n]; ok {
				continue
			}
			host := ""
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, n)); err == nil {
					host = filepath.Join(d, n)
					break
				}
			}
			if host == "" {
				return fmt.Errorf("finding library %s needed by %s in %v", n, file, libDirs)
			}
			found[n] = library{host: host, image: strings.TrimPrefix(host, "/")}
			if err := walk(host); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(bin); err != nil {
		return nil, err
	}
	var out []library
	seen := map[string]bool{}
	for _, l := range found {
		if !seen[l.image] {
			seen[l.image] = true
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].image < out[j].image })
	return out, nil
}

// hostFile reads a host file (following symlinks) into an entry at p.
func hostFile(host, p string) (Entry, error) {
	data, err := os.ReadFile(host)
	if err != nil {
		return Entry{}, fmt.Errorf("reading %s: %w", host, err)
	}
	return File(p, 0o755, data), nil
}

// Catalog returns every image the end-to-end tier pushes: the scenarios'
// images and the ones critest asks for (under the names critest uses, minus
// their registry host, see CritestImages).
func Catalog(src Sources) ([]Spec, error) {
	libDirs := src.LibDirs
	if libDirs == nil {
		libDirs = DefaultLibDirs
	}
	dyn, err := busyboxEntries(src.Busybox, libDirs)
	if err != nil {
		return nil, err
	}
	static, err := busyboxEntries(src.StaticBusybox, libDirs)
	if err != nil {
		return nil, err
	}
	pause, err := hostFile(src.Pause, "pause")
	if err != nil {
		return nil, err
	}
	web, err := os.ReadFile(src.Webserver)
	if err != nil {
		return nil, fmt.Errorf("reading webserver: %w", err)
	}
	nnp, err := os.ReadFile(src.NoNewPrivs)
	if err != nil {
		return nil, fmt.Errorf("reading nonewprivs: %w", err)
	}
	base := append(baseEntries(passwd, group), dyn...)
	sh := v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}
	pauseCfg := v1.Config{Entrypoint: []string{"/pause"}}
	specs := []Spec{
		{Name: BusyboxImage, Layers: [][]Entry{base}, Config: sh},
		{Name: StaticBusyboxImage, Layers: [][]Entry{append(baseEntries(passwd, group), static...)}, Config: sh},
		{Name: PauseImage, Layers: [][]Entry{{pause}}, Config: pauseCfg},
	}
	specs = append(specs, critestSpecs(base, sh, programs{pause: pause.Data, web: web, nnp: nnp})...)
	return specs, nil
}
