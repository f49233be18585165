package shim

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestClassifyMount(t *testing.T) {
	const kubelet = "/var/lib/kubelet/pods/0b7e-uid/volumes/"
	tests := []struct {
		name  string
		m     specs.Mount
		want  volumeKind
		guest string // GuestPath
	}{
		{"configMap", specs.Mount{Source: kubelet + "kubernetes.io~configmap/game", Destination: "/etc/game"}, volumeCopy, "/run/veil/volumes/c1-2"},
		{"secret", specs.Mount{Source: kubelet + "kubernetes.io~secret/token", Destination: "/var/run/secrets/x"}, volumeCopy, "/run/veil/volumes/c1-2"},
		{"downward API", specs.Mount{Source: kubelet + "kubernetes.io~downward-api/info", Destination: "/etc/info"}, volumeCopy, "/run/veil/volumes/c1-2"},
		{"projected", specs.Mount{Source: kubelet + "kubernetes.io~projected/kube-api-access-x", Destination: "/var/run/secrets/kubernetes.io/serviceaccount"}, volumeCopy, "/run/veil/volumes/c1-2"},
		{"emptyDir", specs.Mount{Source: kubelet + "kubernetes.io~empty-dir/cache", Destination: "/cache"}, volumeMemory, "/run/veil/volumes/emptydir-cache/dir"},
		{"test dir of the same shape", specs.Mount{Source: "/tmp/x/pods/p1/volumes/kubernetes.io~configmap/cm/", Destination: "/cm"}, volumeCopy, "/run/veil/volumes/c1-2"},
		{"inside a configMap volume (subPath-like)", specs.Mount{Source: kubelet + "kubernetes.io~configmap/game/key", Destination: "/key"}, volumeHost, ""},
		{"kubelet subPath", specs.Mount{Source: "/var/lib/kubelet/pods/u/volume-subpaths/game/c/0", Destination: "/key"}, volumeHost, ""},
		{"other volume plugin", specs.Mount{Source: kubelet + "kubernetes.io~nfs/data", Destination: "/data"}, volumeHost, ""},
		{"CRI hosts", specs.Mount{Source: "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/sb/hosts", Destination: "/etc/hosts"}, volumeCopy, "/run/veil/volumes/c1-2/hosts"},
		{"kubelet etc-hosts", specs.Mount{Source: "/var/lib/kubelet/pods/u/etc-hosts", Destination: "/etc/hosts"}, volumeCopy, "/run/veil/volumes/c1-2/hosts"},
		{"CRI resolv.conf", specs.Mount{Source: "/run/sb/resolv.conf", Destination: "/etc/resolv.conf"}, volumeCopy, "/run/veil/volumes/c1-2/resolv.conf"},
		{"CRI hostname", specs.Mount{Source: "/run/sb/hostname", Destination: "/etc/hostname"}, volumeCopy, "/run/veil/volumes/c1-2/hostname"},
		{"CRI sandbox shm", specs.Mount{Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/sb/shm", Destination: "/dev/shm"}, volumeMemory, "/run/veil/volumes/shm/dir"},
		{"host IPC shm", specs.Mount{Source: "/dev/shm", Destination: "/dev/shm"}, volumeHost, ""},
		{"termination log", specs.Mount{Source: "/var/lib/kubelet/pods/u/containers/app/5f3a", Destination: "/dev/termination-log"}, volumeMemoryFile, "/run/veil/volumes/c1-2/termination-log"},
		{"hostPath", specs.Mount{Source: "/var/log", Destination: "/var/log"}, volumeHost, ""},
		{"hostPath at a guest-volume-like destination", specs.Mount{Source: "/etc", Destination: "/etc/config"}, volumeHost, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := classifyMount("c1", 2, tt.m)
			if v.Kind != tt.want {
				t.Fatalf("kind %d, want %d", v.Kind, tt.want)
			}
			if tt.want != volumeHost && v.GuestPath() != tt.guest {
				t.Fatalf("guest path %s, want %s", v.GuestPath(), tt.guest)
			}
		})
	}
}

func TestConfidentialMounts(t *testing.T) {
	spec := &specs.Spec{Root: &specs.Root{Path: "rootfs"}, Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/etc/game", Type: "bind", Source: "/k/pods/u/volumes/kubernetes.io~configmap/game", Options: []string{"rbind", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: "/sb/hosts", Options: []string{"rbind", "rw"}},
		{Destination: "/cache", Type: "bind", Source: "/k/pods/u/volumes/kubernetes.io~empty-dir/cache", Options: []string{"rbind"}},
	}}
	// A guest copy keeps the spec's own options.
	gspec, binds := guestSpec("c1", spec, nil)
	keep, vols, err := confidentialMounts("c1", spec, gspec, binds, false, "veil-dev")
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 0 {
		t.Fatalf("host binds kept: %+v", keep)
	}
	if len(vols) != 3 {
		t.Fatalf("guest volumes %+v", vols)
	}
	want := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/etc/game", Type: "bind", Source: "/run/veil/volumes/c1-1", Options: []string{"rbind", "ro"}},
		{Destination: "/etc/hosts", Type: "bind", Source: "/run/veil/volumes/c1-2/hosts", Options: []string{"rbind", "rw"}},
		{Destination: "/cache", Type: "bind", Source: "/run/veil/volumes/emptydir-cache/dir", Options: []string{"rbind"}},
	}
	for i, m := range gspec.Mounts {
		if m.Source != want[i].Source || strings.Join(m.Options, ",") != strings.Join(want[i].Options, ",") {
			t.Errorf("mount %d = %+v, want %+v", i, m, want[i])
		}
	}
	if spec.Mounts[1].Source != "/k/pods/u/volumes/kubernetes.io~configmap/game" {
		t.Errorf("the original spec was modified: %+v", spec.Mounts[1])
	}

	hostPath := &specs.Spec{Mounts: append(spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/srv/data"})}
	gspec, binds = guestSpec("c1", hostPath, nil)
	_, _, err = confidentialMounts("c1", hostPath, gspec, binds, false, "the confidential handler veil-dev")
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "/srv/data") || !strings.Contains(err.Error(), "veil-dev") || !strings.Contains(err.Error(), "allow_host_mounts") {
		t.Fatalf("hostPath without allow_host_mounts: %v", err)
	}
	gspec, binds = guestSpec("c1", hostPath, nil)
	keep, vols, err = confidentialMounts("c1", hostPath, gspec, binds, true, "veil-dev")
	if err != nil || len(keep) != 1 || keep[0].Source != "/srv/data" || len(vols) != 3 {
		t.Fatalf("hostPath with allow_host_mounts: keep %+v, vols %+v, %v", keep, vols, err)
	}
	if gspec.Mounts[4].Source != "/run/veil/shared/c1/mounts/4-data" {
		t.Fatalf("shared hostPath source %s", gspec.Mounts[4].Source)
	}
}
