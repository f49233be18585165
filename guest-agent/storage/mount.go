package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// SharedDir is where the sandbox's shared filesystem is mounted.
const SharedDir = "/run/veil/shared"

// ShareTag is the virtio-9p mount tag of the sandbox's shared filesystem.
const ShareTag = "veilshare"

// ninePDefaults are added to a 9p mount's options unless set: the virtio
// transport, the Linux protocol dialect and a message size that keeps large
// reads in few round trips (the virtio transport caps it below 512 KiB).
var ninePDefaults = []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"}

// Spec is one mount request, as in the agent API's Storage message.
type Spec struct {
	Driver, Source, MountPoint, FSType string
	Options                            []string
}

// Plan is the mount(2) call a Spec turns into.
type Plan struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	// Remount is a second call (bind mounts cannot be read-only at once).
	Remount uintptr
}

var flagOptions = map[string]struct {
	set   bool
	flags uintptr
}{
	"ro": {true, unix.MS_RDONLY}, "rw": {false, unix.MS_RDONLY},
	"nosuid": {true, unix.MS_NOSUID}, "suid": {false, unix.MS_NOSUID},
	"nodev": {true, unix.MS_NODEV}, "dev": {false, unix.MS_NODEV},
	"noexec": {true, unix.MS_NOEXEC}, "exec": {false, unix.MS_NOEXEC},
	"sync": {true, unix.MS_SYNCHRONOUS}, "async": {false, unix.MS_SYNCHRONOUS},
	"noatime": {true, unix.MS_NOATIME}, "atime": {false, unix.MS_NOATIME},
	"nodiratime": {true, unix.MS_NODIRATIME}, "relatime": {true, unix.MS_RELATIME},
	"strictatime": {true, unix.MS_STRICTATIME},
	"bind":        {true, unix.MS_BIND}, "rbind": {true, unix.MS_BIND | unix.MS_REC},
	"private": {true, unix.MS_PRIVATE}, "rprivate": {true, unix.MS_PRIVATE | unix.MS_REC},
	"slave": {true, unix.MS_SLAVE}, "rslave": {true, unix.MS_SLAVE | unix.MS_REC},
	"defaults": {false, 0},
}

// ParseOptions splits mount(8) options into mount(2) flags and the data
// string for the filesystem.
func ParseOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, ok := flagOptions[o]; ok {
			if f.set {
				flags |= f.flags
			} else {
				flags &^= f.flags
			}
			continue
		}
		if o != "" {
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}

// NinePOptions adds the 9p defaults to opts unless opts sets them.
func NinePOptions(opts []string) []string {
	out := append([]string(nil), opts...)
	for _, d := range ninePDefaults {
		key, _, _ := strings.Cut(d, "=")
		found := false
		for _, o := range opts {
			if k, _, _ := strings.Cut(o, "="); k == key {
				found = true
			}
		}
		if !found {
			out = append(out, d)
		}
	}
	return out
}

// PlanMount turns s into a mount(2) call. "shared" sources are resolved in
// shared (see Resolve); an unknown driver or a missing field is
// errdefs.ErrInvalidArgument.
func PlanMount(s Spec, shared string) (Plan, error) {
	target := s.MountPoint
	if target == "" && s.Driver == "9p" && s.Source == ShareTag {
		target = SharedDir
	}
	if target == "" || !filepath.IsAbs(target) {
		return Plan{}, fmt.Errorf("storage %q (%s): mount_point %q must be an absolute guest path: %w", s.Source, s.Driver, s.MountPoint, errdefs.ErrInvalidArgument)
	}
	target = filepath.Clean(target)
	switch s.Driver {
	case "9p":
		if s.Source == "" {
			return Plan{}, fmt.Errorf("9p storage at %s has no mount tag in source: %w", target, errdefs.ErrInvalidArgument)
		}
		flags, data := ParseOptions(NinePOptions(s.Options))
		return Plan{Source: s.Source, Target: target, FSType: "9p", Flags: flags, Data: data}, nil
	case "tmpfs":
		flags, data := ParseOptions(s.Options)
		return Plan{Source: "tmpfs", Target: target, FSType: "tmpfs", Flags: flags | unix.MS_NOSUID | unix.MS_NODEV, Data: data}, nil
	case "bind", "shared":
		src := s.Source
		if s.Driver == "shared" {
			p, err := Resolve(shared, s.Source)
			if err != nil {
				return Plan{}, err
			}
			src = p
		} else if !filepath.IsAbs(src) {
			return Plan{}, fmt.Errorf("bind storage source %q must be an absolute guest path: %w", src, errdefs.ErrInvalidArgument)
		}
		flags, data := ParseOptions(s.Options)
		p := Plan{Source: src, Target: target, FSType: "none", Flags: unix.MS_BIND | (flags & unix.MS_REC), Data: data}
		if rest := flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
			p.Remount = unix.MS_BIND | unix.MS_REMOUNT | rest
		}
		return p, nil
	case "":
		return Plan{}, fmt.Errorf("storage at %s has no driver; use 9p, tmpfs, bind or shared: %w", target, errdefs.ErrInvalidArgument)
	default:
		if s.FSType == "" {
			return Plan{}, fmt.Errorf("storage driver %q is unknown; use 9p, tmpfs, bind or shared: %w", s.Driver, errdefs.ErrInvalidArgument)
		}
		flags, data := ParseOptions(s.Options)
		return Plan{Source: s.Source, Target: target, FSType: s.FSType, Flags: flags, Data: data}, nil
	}
}

// Mount performs p, creating its mount point (a file for a bind mount of a
// file).
func Mount(p Plan) error {
	if err := makeTarget(p); err != nil {
		return err
	}
	if err := unix.Mount(p.Source, p.Target, p.FSType, p.Flags, p.Data); err != nil {
		return fmt.Errorf("mounting %s (%s) on %s: %w", p.Source, p.FSType, p.Target, err)
	}
	if p.Remount != 0 {
		if err := unix.Mount("", p.Target, "", p.Remount, ""); err != nil {
			_ = unix.Unmount(p.Target, unix.MNT_DETACH)
			return fmt.Errorf("applying options to bind mount %s: %w", p.Target, err)
		}
	}
	return nil
}

func makeTarget(p Plan) error {
	if p.Flags&unix.MS_BIND != 0 {
		if fi, err := os.Stat(p.Source); err == nil && !fi.IsDir() {
			if err := os.MkdirAll(filepath.Dir(p.Target), 0o755); err != nil {
				return fmt.Errorf("creating mount point %s: %w", p.Target, err)
			}
			f, err := os.OpenFile(p.Target, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return fmt.Errorf("creating mount point %s: %w", p.Target, err)
			}
			return f.Close()
		}
	}
	if err := os.MkdirAll(p.Target, 0o755); err != nil {
		return fmt.Errorf("creating mount point %s: %w", p.Target, err)
	}
	return nil
}

// Unmount detaches the mount at target.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		if err2 := unix.Unmount(target, unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmounting %s: %w", target, err)
		}
	}
	return nil
}
