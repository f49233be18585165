package shim

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

// TestConfidentialGuestSpec: what `veil policy check` decides is the spec
// createInGuest sends: kubelet volumes and the CRI's files from guest
// volumes, other host paths from the share, the host's spec untouched.
func TestConfidentialGuestSpec(t *testing.T) {
	pod := "/var/lib/kubelet/pods/u1"
	spec := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}}, Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/etc/app", Type: "bind", Source: pod + "/volumes/kubernetes.io~configmap/app", Options: []string{"rbind", "ro"}},
		{Destination: "/scratch", Type: "bind", Source: pod + "/volumes/kubernetes.io~empty-dir/scratch", Options: []string{"rbind"}},
		{Destination: "/etc/hosts", Type: "bind", Source: pod + "/etc-hosts", Options: []string{"rbind"}},
		{Destination: "/data", Type: "bind", Source: "/srv/data", Options: []string{"rbind"}},
	}}
	g, err := ConfidentialGuestSpec("c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"proc", policy.GuestVolumeRoot + "/c1-1", policy.GuestVolumeRoot + "/emptydir-scratch/dir", policy.GuestVolumeRoot + "/c1-3/hosts", guestSharedDir + "/c1/mounts/4-data"}
	for i, m := range g.Mounts {
		if m.Source != want[i] {
			t.Errorf("mount %s: source %s, want %s", m.Destination, m.Source, want[i])
		}
	}
	if g.Root == nil || g.Root.Path != "rootfs" || !strings.HasPrefix(spec.Mounts[1].Source, pod) {
		t.Errorf("guest root %+v; host spec's mount now %s", g.Root, spec.Mounts[1].Source)
	}
}
