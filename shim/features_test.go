package shim

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// Info carries the features document containerd reads, as containerd's CRI
// reads it (internal/cri/server introspectRuntimeFeatures): recursive
// read-only mounts on (critest "Container Mount Readonly" skips without),
// CRI user namespaces off (no idmapped mounts).
func TestInfoReportsFeatures(t *testing.T) {
	info, err := NewManager(RuntimeName, t.TempDir()).Info(context.Background(), bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	if info.Features == nil {
		t.Fatal("Info has no Features")
	}
	x, err := typeurl.UnmarshalAny(info.Features)
	if err != nil {
		t.Fatalf("decoding Features (%s): %v", info.Features.GetTypeUrl(), err)
	}
	f, ok := x.(*features.Features)
	if !ok {
		t.Fatalf("Features is a %T, containerd wants *features.Features", x)
	}
	if !slices.Contains(f.MountOptions, "rro") {
		t.Errorf("MountOptions lack rro: %q", f.MountOptions)
	}
	if slices.Contains(f.MountOptions, "idmap") || slices.Contains(f.MountOptions, "ridmap") {
		t.Errorf("MountOptions claim idmapped mounts: %q", f.MountOptions)
	}
	if m := f.Linux.MountExtensions; m == nil || m.IDMap == nil || m.IDMap.Enabled == nil || *m.IDMap.Enabled {
		t.Errorf("IDMap is not reported disabled: %+v", m)
	}
	// Only the hooks the shim runs on the host (hooks.go refuses the rest).
	want := []string{"prestart", "createRuntime", "poststart", "poststop"}
	if !slices.Equal(f.Hooks, want) {
		t.Errorf("Hooks = %q, want %q", f.Hooks, want)
	}
	for _, h := range []string{"createContainer", "startContainer"} {
		if slices.Contains(f.Hooks, h) {
			t.Errorf("Hooks claim %s, which the shim refuses", h)
		}
	}
}

// The document is a fresh copy each time: a caller changing it does not
// change what the next -info reports.
func TestRuntimeFeaturesIsACopy(t *testing.T) {
	f := RuntimeFeatures()
	f.MountOptions[0] = "changed"
	if RuntimeFeatures().MountOptions[0] == "changed" {
		t.Error("RuntimeFeatures shares its MountOptions slice")
	}
}
