package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestDecide(t *testing.T) {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(tt.labels); got != tt.want {
				t.Fatalf("Decide = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestServeRemoteSnapshotterProtocol drives the snapshotter the way
// containerd's unpacker and CRI do, through containerd's own gRPC proxy
// client on a unix socket.
func TestServeRemoteSnapshotterProtocol(t *testing.T) {
	root := t.TempDir()
	sn, err := New(filepath.Join(root, "state"), nil)
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
