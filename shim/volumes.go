package shim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/shim/volsync"
)

// Confidential volumes. A confidential pod shares nothing volume-wise with
// the host: each bind mount of a container's spec is one of
//
//   - a kubelet configMap, secret, downward-API or projected volume
//     (<kubelet>/pods/<uid>/volumes/kubernetes.io~configmap/<name>, ...), or
//     one of the CRI's sandbox files bound at /etc/hosts, /etc/resolv.conf,
//     /etc/hostname: copied into a guest volume through the agent's Volume
//     service (shim/volsync) before the container is created, then kept in
//     sync every volumeSyncInterval until the container goes;
//   - an emptyDir (kubernetes.io~empty-dir/<name>) or the CRI's sandbox
//     /dev/shm: a directory in guest memory (the guest's /run is a tmpfs),
//     one per pod, shared by the pod's containers, never copied either way;
//   - a kubelet container file (<kubelet>/pods/<uid>/containers/<name>/<id>,
//     the termination log): an empty file in guest memory (the message stays
//     in the guest);
//   - anything else (hostPath, a subPath, the host's /dev/shm): refused,
//     naming the path and the handler, unless the init-data's agent policy
//     has allow_host_mounts, which shares it over 9p as for veil.
//
// The container binds the guest volume's directory (or file) from
// policy.GuestVolumeRoot, which the agent policy lets through without
// allow_host_mounts.

// volumeSyncInterval is how often a copied volume is compared with the host.
const volumeSyncInterval = time.Second

// volumeKind is what a confidential pod does with one bind mount.
type volumeKind int

const (
	// volumeHost is a host path: refused, or shared with allow_host_mounts.
	volumeHost volumeKind = iota
	// volumeCopy is copied into the guest and kept in sync.
	volumeCopy
	// volumeMemory is a pod-wide directory in guest memory.
	volumeMemory
	// volumeMemoryFile is an empty file in guest memory.
	volumeMemoryFile
)

// guestVolume is one bind mount of a confidential pod's container that
// lives in a guest volume.
type guestVolume struct {
	// Index is the mount's index in the spec.
	Index int
	Kind  volumeKind
	// Source is the host path (copied, or whose mode the guest directory
	// takes).
	Source string
	// Volume is the guest volume's name (one path element).
	Volume string
	// Entry is the bound entry inside the volume; "" binds the volume
	// directory itself.
	Entry string
}

// GuestPath is the bind mount's source in the guest.
func (v guestVolume) GuestPath() string {
	return path.Join(policy.GuestVolumeRoot, v.Volume, v.Entry)
}

// kubeletVolume matches kubelet's volume directories: <root>/pods/<pod
// uid>/volumes/kubernetes.io~<plugin>/<volume name>.
var kubeletVolume = regexp.MustCompile(`/pods/[^/]+/volumes/kubernetes\.io~(configmap|secret|downward-api|projected|empty-dir)/([^/]+)$`)

// kubeletContainerFile matches kubelet's per-container files (the
// termination log): <root>/pods/<pod uid>/containers/<name>/<id>.
var kubeletContainerFile = regexp.MustCompile(`/pods/[^/]+/containers/[^/]+/[^/]+$`)

// criFiles are the CRI's sandbox files, by their destination.
var criFiles = []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}

// classifyMount decides what a confidential pod does with bind mount i of
// container cid.
func classifyMount(cid string, i int, m specs.Mount) guestVolume {
	src := filepath.Clean(m.Source)
	v := guestVolume{Index: i, Source: src, Volume: fmt.Sprintf("%s-%d", cid, i)}
	entry := path.Base(m.Destination)
	if entry == "/" || entry == "." {
		entry = "file"
	}
	if sm := kubeletVolume.FindStringSubmatch(src); sm != nil {
		if sm[1] == "empty-dir" {
			v.Kind, v.Volume, v.Entry = volumeMemory, "emptydir-"+sm[2], "dir"
			return v
		}
		v.Kind = volumeCopy
		return v
	}
	switch {
	case slices.Contains(criFiles, path.Clean(m.Destination)):
		v.Kind, v.Entry = volumeCopy, entry
	case path.Clean(m.Destination) == "/dev/shm" && src != "/dev/shm":
		// The CRI's sandbox shm (a host tmpfs per pod); the host's own
		// /dev/shm (host IPC) is a host path.
		v.Kind, v.Volume, v.Entry = volumeMemory, "shm", "dir"
	case kubeletContainerFile.MatchString(src):
		v.Kind, v.Entry = volumeMemoryFile, entry
	default:
		v.Kind = volumeHost
	}
	return v
}

// confidentialMounts turns the guest spec of a confidential pod's
// container (from guestSpec, with its host binds) into one that binds guest
// volumes instead: it returns the spec, the host binds still to share
// (only with allowHostMounts) and the guest volumes to prepare. A host path
// without allowHostMounts is an error naming it and handler. spec is the
// container's original spec; gspec is modified.
func confidentialMounts(cid string, spec, gspec *specs.Spec, binds []hostBind, allowHostMounts bool, handler string) ([]hostBind, []guestVolume, error) {
	var keep []hostBind
	var vols []guestVolume
	for _, b := range binds {
		m := spec.Mounts[b.Index]
		v := classifyMount(cid, b.Index, m)
		if v.Kind == volumeHost {
			if !allowHostMounts {
				return nil, nil, fmt.Errorf("container %s: bind mount of host path %s at %s: %s shares nothing with the host; only configMap, secret, downward-API, projected and emptyDir volumes and the CRI's /etc/hosts, /etc/resolv.conf, /etc/hostname reach its containers (as copies or guest memory), unless the init-data agent policy sets allow_host_mounts: %w",
					cid, m.Source, m.Destination, handler, errdefs.ErrInvalidArgument)
			}
			keep = append(keep, b)
			continue
		}
		gm := &gspec.Mounts[b.Index]
		gm.Source = v.GuestPath()
		gm.Options = slices.Clone(m.Options)
		vols = append(vols, v)
	}
	return keep, vols, nil
}

// volumeSet is a container's copied volumes and their watchers.
type volumeSet struct {
	syncers []*volsync.Syncer
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// timeoutCopier bounds each Volume call by the pod's call timeout.
type timeoutCopier struct {
	api.VolumeService
	d time.Duration
}

func (c timeoutCopier) CopyFile(ctx context.Context, r *api.CopyFileRequest) (*emptypb.Empty, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.VolumeService.CopyFile(ctx, r)
}

func (c timeoutCopier) RemovePath(ctx context.Context, r *api.RemovePathRequest) (*emptypb.Empty, error) {
	ctx, cancel := context.WithTimeout(ctx, c.d)
	defer cancel()
	return c.VolumeService.RemovePath(ctx, r)
}

// startVolumes prepares a container's guest volumes before it is created:
// guest-memory directories and files are made, copies get their first
// sync and then a watcher until stopVolumes (or the pod's end). On error
// what was started is stopped again.
func (s *service) startVolumes(ctx context.Context, p *pod, c *container, vols []guestVolume) (retErr error) {
	if len(vols) == 0 {
		return nil
	}
	copier := timeoutCopier{p.agent.volume, p.cfg.Agent.CallTimeout.Std()}
	set := &volumeSet{}
	c.volumes = set
	defer func() {
		if retErr != nil {
			s.stopVolumes(ctx, p, c)
		}
	}()
	for _, v := range vols {
		switch v.Kind {
		case volumeMemory, volumeMemoryFile:
			if err := makeMemoryEntry(ctx, copier, v); err != nil {
				return err
			}
		case volumeCopy:
			sy := &volsync.Syncer{Source: v.Source, Volume: v.Volume, Name: v.Entry, Copier: copier,
				Log: slog.New(slog.NewTextHandler(logWriter{log.G(ctx)}, nil))}
			// Registered before the first sync, so a failed one still has
			// what it sent removed.
			set.syncers = append(set.syncers, sy)
			if err := sy.Sync(ctx); err != nil {
				return fmt.Errorf("container %s: copying volume %s into the guest: %w", c.id, v.Source, err)
			}
		}
	}
	wctx, cancel := context.WithCancel(p.ctx)
	set.cancel = cancel
	for _, sy := range set.syncers {
		set.wg.Add(1)
		go func() {
			defer set.wg.Done()
			sy.Watch(wctx, volumeSyncInterval)
		}()
	}
	return nil
}

// makeMemoryEntry creates a guest-memory directory (with the host
// directory's mode and owner, as kubelet made it) or an empty file.
func makeMemoryEntry(ctx context.Context, copier api.VolumeService, v guestVolume) error {
	req := &api.CopyFileRequest{Volume: v.Volume, Path: v.Entry, Kind: api.CopyFileRequest_FILE, Mode: 0o666}
	if v.Kind == volumeMemory {
		req.Kind, req.Mode = api.CopyFileRequest_DIR, 0o1777
		if v.Volume != "shm" {
			fi, err := os.Stat(v.Source)
			if err != nil {
				return fmt.Errorf("emptyDir volume: %w", err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			req.Mode, req.Uid, req.Gid = uint32(st.Mode)&0o7777, st.Uid, st.Gid
		}
	}
	if _, err := copier.CopyFile(ctx, req); err != nil {
		return fmt.Errorf("creating guest-memory volume %s for %s: %w", v.Volume, v.Source, err)
	}
	return nil
}

// stopVolumes ends a container's volume watchers and removes its copies
// from the guest (not the pod-wide guest-memory volumes, which other
// containers may use; they go with the VM).
func (s *service) stopVolumes(ctx context.Context, p *pod, c *container) {
	set := c.volumes
	if set == nil {
		return
	}
	c.volumes = nil
	if set.cancel != nil {
		set.cancel()
	}
	set.wg.Wait()
	if p == nil || p.isDead() {
		return
	}
	for _, sy := range set.syncers {
		if err := sy.Clear(context.WithoutCancel(ctx)); err != nil {
			log.G(ctx).WithError(err).Warn("removing a volume copy from the guest")
		}
	}
}

// logWriter hands each slog record (one Write per record) to containerd's
// log, where the shim's log lines go.
type logWriter struct{ e *log.Entry }

func (w logWriter) Write(b []byte) (int, error) {
	w.e.Warn(strings.TrimSpace(string(b)))
	return len(b), nil
}
