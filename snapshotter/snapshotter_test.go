package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestDecide(t *testing.T) {
	pause := mustNative(t, "registry.k8s.io/pause:3.10.2", "sandbox image")
	local := mustNative(t, "127.0.0.1:5000/pause:3.10", "sandbox image")
	native := []NativeImage{local, pause}
	tests := []struct {
		name   string
		labels map[string]string
		want   Decision
	}{
		{name: "cri layer", labels: map[string]string{LabelTarget: "sha256:c1", LabelImageRef: "reg/app:1", LabelLayerDigest: "sha256:l1"},
			want: Decision{Skip: true, Target: "sha256:c1", ImageRef: "reg/app:1", Layer: "sha256:l1"}},
		{name: "layer without cri labels (ctr pull, annotations disabled)", labels: map[string]string{LabelTarget: "sha256:c1"}},
		{name: "container snapshot", labels: map[string]string{"containerd.io/gc.root": "x"}},
		{name: "image ref without a target", labels: map[string]string{LabelImageRef: "reg/app:1"}},
		{name: "no labels"},
		// The sandbox image: prepared natively, whatever handler pulls it.
		{name: "sandbox image layer", labels: map[string]string{LabelTarget: "sha256:c1", LabelImageRef: "registry.k8s.io/pause:3.10.2", LabelLayerDigest: "sha256:l1"},
			want: Decision{Target: "sha256:c1", ImageRef: "registry.k8s.io/pause:3.10.2", Layer: "sha256:l1", Native: &native[1]}},
		{name: "sandbox image on a registry with a port", labels: map[string]string{LabelTarget: "sha256:c1", LabelImageRef: "127.0.0.1:5000/pause:3.10"},
			want: Decision{Target: "sha256:c1", ImageRef: "127.0.0.1:5000/pause:3.10", Native: &native[0]}},
		{name: "another tag of the sandbox repository is skipped", labels: map[string]string{LabelTarget: "sha256:c1", LabelImageRef: "registry.k8s.io/pause:3.9"},
			want: Decision{Skip: true, Target: "sha256:c1", ImageRef: "registry.k8s.io/pause:3.9"}},
		{name: "a lookalike repository is skipped", labels: map[string]string{LabelTarget: "sha256:c1", LabelImageRef: "registry.k8s.io/pause-evil:3.10.2"},
			want: Decision{Skip: true, Target: "sha256:c1", ImageRef: "registry.k8s.io/pause-evil:3.10.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.labels, native)
			if got.Skip != tt.want.Skip || got.Target != tt.want.Target || got.ImageRef != tt.want.ImageRef ||
				got.Layer != tt.want.Layer || got.Native != tt.want.Native {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
			if !got.Skip && got.Target != "" && got.Native == nil {
				t.Fatalf("Decide = %+v: a CRI layer prepared natively must name its native image", got)
			}
		})
	}
	// Without native images every CRI layer is skipped.
	if d := Decide(map[string]string{LabelTarget: "c", LabelImageRef: "registry.k8s.io/pause:3.10.2"}, nil); !d.Skip {
		t.Fatalf("Decide without native images = %+v, want Skip", d)
	}
}

func mustNative(t *testing.T, ref, source string) NativeImage {
	t.Helper()
	n, err := ParseNativeImage(ref, source)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNativeImageMatches: the CRI labels each layer with the reference
// it pulls, normalized by reference.ParseDockerRef (Docker Hub names
// completed, a tag dropped when a digest is given), and with the
// manifest's digest.
func TestNativeImageMatches(t *testing.T) {
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	tests := []struct {
		native, ref, manifest string
		want                  bool
	}{
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10.2", d1, true},
		{"pause:3.10", "docker.io/library/pause:3.10", "", true},                  // Docker Hub short names
		{"docker.io/library/pause:3.10", "pause:3.10", "", true},                  // either way round
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10", "", false}, // another tag
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause", "", false},      // latest is not 3.10.2
		{"registry.k8s.io/pause:3.10.2", "k8s.gcr.io/pause:3.10.2", "", false},    // another registry
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause/x:3.10.2", "", false},
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause@" + d1, d1, false}, // a tag cannot be checked against a digest
		// Pinned by digest: the CRI pulls by that digest.
		{"registry.k8s.io/pause@" + d1, "registry.k8s.io/pause@" + d1, d2, true},
		{"registry.k8s.io/pause@" + d1, "registry.k8s.io/pause@" + d2, d2, false},
		{"registry.k8s.io/pause@" + d1, "registry.k8s.io/pause:3.10.2", d2, false},
		// Pinned by a platform manifest's digest: the manifest label.
		{"registry.k8s.io/pause@" + d2, "registry.k8s.io/pause:3.10.2", d2, true},
		{"registry.k8s.io/pause@" + d2, "other.example/pause:3.10.2", d2, false},
		// Tag and digest: the CRI drops the tag, either matches.
		{"registry.k8s.io/pause:3.10.2@" + d1, "registry.k8s.io/pause@" + d1, "", true},
		{"registry.k8s.io/pause:3.10.2@" + d1, "registry.k8s.io/pause:3.10.2", "", true},
		// A bare repository: every tag and digest.
		{"registry.k8s.io/pause", "registry.k8s.io/pause:3.10.2", "", true},
		{"registry.k8s.io/pause", "registry.k8s.io/pause@" + d1, "", true},
		{"registry.k8s.io/pause", "registry.k8s.io/pausex:1", "", false},
		// Garbage from the labels matches nothing.
		{"registry.k8s.io/pause", "", "", false},
		{"registry.k8s.io/pause", "Registry.k8s.io/PAUSE:1", "", false},
		{"registry.k8s.io/pause", "registry.k8s.io/pause:bad tag", "", false},
	}
	for _, tt := range tests {
		n := mustNative(t, tt.native, "test")
		if got := n.Matches(tt.ref, tt.manifest); got != tt.want {
			t.Errorf("%s matches %q (manifest %q) = %v, want %v", tt.native, tt.ref, tt.manifest, got, tt.want)
		}
	}
	if _, err := ParseNativeImage("Not A Ref", "--native-image"); err == nil || !strings.Contains(err.Error(), "Not A Ref") {
		t.Errorf("ParseNativeImage of a bad reference: %v, want an error naming it", err)
	}
	if (NativeImage{}).Matches("registry.k8s.io/pause:1", "") {
		t.Error("the zero NativeImage matches")
	}
}

// TestServeRemoteSnapshotterProtocol drives the snapshotter the way
// containerd's unpacker and CRI do, through containerd's own gRPC proxy
// client on a unix socket.
func TestServeRemoteSnapshotterProtocol(t *testing.T) {
	root := t.TempDir()
	// containerd's config pins the sandbox image in a drop-in it imports.
	cfg := filepath.Join(root, "etc", "config.toml")
	writeFile(t, cfg, "version = 3\nimports = [\"conf.d/*.toml\"]\n")
	writeFile(t, filepath.Join(root, "etc", "conf.d", "10-pause.toml"),
		"version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\nsandbox = 'reg.example/pause:3.10'\n")
	sn, err := New(filepath.Join(root, "state"), Options{ContainerdConfig: cfg, NativeImages: []string{"reg.example/tools"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	sock := filepath.Join(root, "s", "snapshotter.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ServeListener(ctx, sn, ln) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "veil")

	layer := func(target, parent string) error {
		_, err := client.Prepare(ctx, "extract-"+target, parent, snapshots.WithLabels(map[string]string{
			LabelTarget: target, LabelImageRef: "reg.example/enc:1", LabelLayerDigest: "sha256:l-" + target,
		}))
		return err
	}
	// Two layers of an image the CRI pulls: AlreadyExists each time, so
	// containerd neither fetches nor applies them.
	if err := layer("c1", ""); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("layer 1: %v, want AlreadyExists", err)
	}
	if err := layer("c2", "c1"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("layer 2: %v, want AlreadyExists", err)
	}
	if err := layer("c2", "c1"); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("layer 2 again: %v, want AlreadyExists", err)
	}
	info, err := client.Stat(ctx, "c2")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshots.KindCommitted || info.Parent != "c1" || info.Labels[LabelGuestPulled] != "reg.example/enc:1" {
		t.Fatalf("layer 2 info %+v", info)
	}
	// No active extraction snapshots are left behind.
	var keys []string
	client.Walk(ctx, func(_ context.Context, i snapshots.Info) error { keys = append(keys, i.Name); return nil })
	if len(keys) != 2 {
		t.Fatalf("snapshots %v, want the two layers", keys)
	}

	// The container's snapshot on top: an empty directory.
	mounts, err := client.Prepare(ctx, "container-1", "c2")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("container mounts %+v", mounts)
	}
	if ents, err := os.ReadDir(mounts[0].Source); err != nil || len(ents) != 0 {
		t.Fatalf("container rootfs %s: %v entries, %v", mounts[0].Source, ents, err)
	}

	// The sandbox image's layers and a --native-image's are prepared
	// natively although the CRI pulls them: containerd fetches and
	// applies them, so every handler's snapshotter can unpack them later.
	for _, ref := range []string{"reg.example/pause:3.10", "reg.example/tools:7"} {
		key := "extract-native-" + ref
		mounts, err := client.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{
			LabelTarget: "n-" + ref, LabelImageRef: ref, LabelLayerDigest: "sha256:l-native",
		}))
		if err != nil || len(mounts) != 1 {
			t.Fatalf("layer of native image %s: %+v, %v; want the native snapshotter's mounts", ref, mounts, err)
		}
		if err := client.Remove(ctx, key); err != nil {
			t.Fatal(err)
		}
	}

	// A layer without the CRI's labels is prepared natively (the host
	// unpacks it, as for any other snapshotter).
	mounts, err = client.Prepare(ctx, "extract-plain", "", snapshots.WithLabels(map[string]string{LabelTarget: "p1"}))
	if err != nil || len(mounts) != 1 {
		t.Fatalf("plain layer: %+v, %v", mounts, err)
	}
	if err := client.Commit(ctx, "p1", "extract-plain"); err != nil {
		t.Fatal(err)
	}
	if err := client.Remove(ctx, "container-1"); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesABadNativeImage(t *testing.T) {
	_, err := New(t.TempDir(), Options{NativeImages: []string{"Not A Ref"}})
	if err == nil || !strings.Contains(err.Error(), "Not A Ref") || !strings.Contains(err.Error(), "--native-image") {
		t.Fatalf("New: %v, want an error naming the reference and the flag", err)
	}
}
