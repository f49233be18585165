package containers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func i64(v int64) *int64 { return &v }

func TestRewriteDevices(t *testing.T) {
	// As the CRI writes a device of a block PVC: the host's loop7 (7:7) at
	// /dev/xvda, allowed after the default deny rule.
	spec := &specs.Spec{Linux: &specs.Linux{
		Devices: []specs.LinuxDevice{
			{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229},
			{Path: "/dev/xvda", Type: "b", Major: 7, Minor: 7},
		},
		Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"},
			{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
			{Allow: true, Type: "b", Major: i64(7), Minor: i64(7), Access: "rw"},
		}},
	}}
	if err := RewriteDevices(spec, map[string]BlockDevice{"/dev/xvda": {Name: "vda", Major: 254, Minor: 16}}); err != nil {
		t.Fatal(err)
	}
	wantDevices := []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229},
		{Path: "/dev/xvda", Type: "b", Major: 254, Minor: 16},
	}
	if !reflect.DeepEqual(spec.Linux.Devices, wantDevices) {
		t.Errorf("devices = %+v, want %+v", spec.Linux.Devices, wantDevices)
	}
	wantRules := []specs.LinuxDeviceCgroup{
		{Allow: false, Access: "rwm"},
		{Allow: true, Type: "c", Major: i64(10), Minor: i64(229), Access: "rwm"},
		{Allow: true, Type: "b", Major: i64(254), Minor: i64(16), Access: "rw"},
	}
	if !reflect.DeepEqual(spec.Linux.Resources.Devices, wantRules) {
		t.Errorf("device rules = %+v, want %+v", spec.Linux.Resources.Devices, wantRules)
	}

	err := RewriteDevices(spec, map[string]BlockDevice{"/dev/fuse": {Major: 254}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a disk for a character device: err = %v, want InvalidArgument", err)
	}
	if err := RewriteDevices(&specs.Spec{}, map[string]BlockDevice{"/dev/xvdb": {}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a disk for no spec device: err = %v, want InvalidArgument", err)
	}
}

// fakeSysBlock makes /sys/block-like entries: name -> serial, "maj:min".
func fakeSysBlock(t *testing.T, disks map[string][2]string) string {
	t.Helper()
	root := t.TempDir()
	for name, d := range disks {
		dir := filepath.Join(root, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if d[0] != "" {
			if err := os.WriteFile(filepath.Join(dir, "serial"), []byte(d[0]+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "dev"), []byte(d[1]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFindBlockDevice(t *testing.T) {
	sys := fakeSysBlock(t, map[string][2]string{
		"loop0": {"", "7:0"},
		"vda":   {"vb1", "254:0"},
		"vdb":   {"vb2", "254:16"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := FindBlockDevice(ctx, sys, "vb2")
	if err != nil {
		t.Fatal(err)
	}
	if want := (BlockDevice{Name: "vdb", Major: 254, Minor: 16}); got != want {
		t.Errorf("FindBlockDevice(vb2) = %+v, want %+v", got, want)
	}

	// A disk that never comes: the wait ends with the context.
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := FindBlockDevice(short, sys, "vb9"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("FindBlockDevice(vb9) err = %v, want DeadlineExceeded", err)
	}

	bad := fakeSysBlock(t, map[string][2]string{"vdc": {"vb3", "garbage"}})
	if _, err := FindBlockDevice(ctx, bad, "vb3"); err == nil {
		t.Error("a disk with unreadable numbers was accepted")
	}
}
