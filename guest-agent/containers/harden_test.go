package containers

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hostileSpec is what a hostile host might send: a setuid-capable bind of a
// copied volume (read-only, as configMaps are, with "suid"), a path that
// only looks like a volume, a host share, a writable sysfs, no masked
// paths, and device rules without the deny-all.
func hostileSpec(t *testing.T) []byte {
	t.Helper()
	major, minor := int64(1), int64(1)
	s := specs.Spec{
		Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"},
		Mounts: []specs.Mount{
			{Destination: "/etc/config", Type: "bind", Source: "/run/veil/volumes/c1-3", Options: []string{"rbind", "ro", "suid"}},
			{Destination: "/data", Source: "/run/veil/volumes/../volumes/emptydir-data/dir", Options: []string{"rbind", "rw", "dev"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/veil/volumes/shm/dir", Options: []string{"rbind"}},
			{Destination: "/lookalike", Type: "bind", Source: "/run/veil/volumesX/a", Options: []string{"rbind"}},
			{Destination: "/host", Type: "bind", Source: "/run/veil/shared/c1-host", Options: []string{"rbind", "rw"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "rw"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"rw"}},
		},
		Linux: &specs.Linux{
			Devices: []specs.LinuxDevice{{Path: "/dev/mem", Type: "c", Major: 1, Minor: 1}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
				{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rw"},
			}},
			MaskedPaths: []string{"/proc/kcore"},
		},
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHardenOrdinaryPod(t *testing.T) {
	s, err := RewriteSpec(hostileSpec(t), Rewrite{ID: "c1", Rootfs: "/r"})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"rbind", "ro", "nosuid", "nodev"},
		{"rbind", "rw", "nosuid", "nodev"},
		{"rbind", "nosuid", "nodev"},
		{"rbind"},       // not a volume
		{"rbind", "rw"}, // the host is trusted in an ordinary pod
		{"nosuid", "rw"},
		{"rw"},
	}
	for i, m := range s.Mounts {
		if !reflect.DeepEqual(m.Options, want[i]) {
			t.Errorf("mount %s: options %q, want %q", m.Destination, m.Options, want[i])
		}
	}
	if !reflect.DeepEqual(s.Linux.MaskedPaths, []string{"/proc/kcore"}) || len(s.Linux.Resources.Devices) != 1 {
		t.Errorf("ordinary pod's masked paths or device rules changed: %q %+v", s.Linux.MaskedPaths, s.Linux.Resources.Devices)
	}
}

func TestHardenConfidentialPod(t *testing.T) {
	s, err := RewriteSpec(hostileSpec(t), Rewrite{ID: "c1", Rootfs: "/r", Confidential: true})
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"rbind", "ro", "nosuid", "nodev"},
		{"rbind", "rw", "nosuid", "nodev"},
		{"rbind", "nosuid", "nodev"},
		{"rbind", "nosuid", "nodev"},
		{"rbind", "rw", "nosuid", "nodev"},
		{"nosuid", "ro"},
		{"rw"},
	}
	for i, m := range s.Mounts {
		if !reflect.DeepEqual(m.Options, want[i]) {
			t.Errorf("mount %s: options %q, want %q", m.Destination, m.Options, want[i])
		}
	}
	for _, p := range append(DefaultMaskedPaths, "/proc/kcore") {
		if n := count(s.Linux.MaskedPaths, p); n != 1 {
			t.Errorf("masked path %s listed %d times", p, n)
		}
	}
	for _, p := range DefaultReadonlyPaths {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) {
			t.Errorf("read-only path %s missing", p)
		}
	}
	// The spec's own rules after one deny-all, nothing added; the device
	// list untouched (the policy compares it with the bound spec).
	rules := s.Linux.Resources.Devices
	if len(rules) != 2 || !isDenyAll(rules[0]) || !rules[1].Allow || rules[1].Type != "c" {
		t.Errorf("device rules %+v, want deny-all then the spec's one rule", rules)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/mem" {
		t.Errorf("devices %+v changed", s.Linux.Devices)
	}
	// Idempotent: a spec that already starts with the deny-all keeps one.
	b, _ := json.Marshal(s)
	again, err := RewriteSpec(b, Rewrite{ID: "c1", Rootfs: "/r", Confidential: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Linux.Resources.Devices, rules) || !reflect.DeepEqual(again.Mounts, s.Mounts) ||
		!reflect.DeepEqual(again.Linux.MaskedPaths, s.Linux.MaskedPaths) {
		t.Error("hardening twice changed the spec again")
	}
}

// TestHardenConfidentialNoResources: a spec without linux.resources gets
// the deny-all rule alone.
func TestHardenConfidentialNoResources(t *testing.T) {
	s, err := RewriteSpec([]byte(`{"process":{"args":["sh"]}}`), Rewrite{ID: "c1", Rootfs: "/r", Confidential: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Linux.Resources.Devices; len(r) != 1 || !isDenyAll(r[0]) {
		t.Fatalf("device rules %+v, want only deny-all", r)
	}
}

// TestHardenNamespaces: a spec asking for no PID or mount namespace (the
// host's, hostPID-style) shares the VM's in an ordinary pod, where the
// host is trusted, and gets its own in a confidential one; a container
// joining the pod's PID namespace keeps it.
func TestHardenNamespaces(t *testing.T) {
	raw := []byte(`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"network","path":"/var/run/netns/x"}]}}`)
	joins := []byte(`{"process":{"args":["sh"]},"linux":{"namespaces":[{"type":"pid","path":"/proc/9/ns/pid"},{"type":"mount"}]}}`)
	for _, tc := range []struct {
		name         string
		raw          []byte
		pidns        string
		confidential bool
		want         []specs.LinuxNamespace
	}{
		{"ordinary, host namespaces", raw, "", false, []specs.LinuxNamespace{{Type: "cgroup"}}},
		{"confidential, host namespaces", raw, "", true, []specs.LinuxNamespace{{Type: "cgroup"}, {Type: "pid"}, {Type: "mount"}}},
		{"confidential, pod pid namespace", joins, "/proc/7/ns/pid", true, []specs.LinuxNamespace{{Type: "pid", Path: "/proc/7/ns/pid"}, {Type: "mount"}, {Type: "cgroup"}}},
	} {
		s, err := RewriteSpec(tc.raw, Rewrite{ID: "c1", Rootfs: "/r", PIDNamespace: tc.pidns, Confidential: tc.confidential})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(s.Linux.Namespaces, tc.want) {
			t.Errorf("%s: namespaces %+v, want %+v", tc.name, s.Linux.Namespaces, tc.want)
		}
	}
}

func count(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}
