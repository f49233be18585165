//go:build e2e

package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestSandboxImageAfterGuestPull pins the real-host bug "after a
// guest-pull pod, containerd holds the sandbox image without layer
// content, and later runc or veil pods on the node fail with `content
// digest ... not found`": with no sandbox image on the node, a veil-dev
// pod makes the CRI pull it through veil's proxy snapshotter (the pod's
// handler's), and containerd's image store is one for all snapshotters,
// so a runc pod afterwards must unpack the same image into overlayfs from
// containerd's content store. The snapshotter prepares the sandbox image
// (pinned in the environment's containerd config) natively, so its
// layers are in the content store and the runc pod starts; the veil-dev
// pod's own image is still left to the guest (its layer never reaches
// the content store).
//
// It runs when VEIL_E2E_HANDLERS names veil-dev.
func TestSandboxImageAfterGuestPull(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-sandbox-image", 10*time.Minute)
	if err := env.CheckHandler(harness.Runc); err != nil {
		t.Fatal(err)
	}
	pause := env.Image(testimages.PauseImage)

	// No sandbox image on the node: the veil-dev pod is the one that
	// makes the CRI pull it.
	if ids := strings.TrimSpace(crictl(t, ctx, "images", "--quiet", pause)); ids != "" {
		crictl(t, ctx, "rmi", pause)
	}

	marker := fmt.Sprintf("sandbox-image %d", time.Now().UnixNano())
	markerLayer := tarLayer(t, "marker", marker)
	ref := push(t, "sandboximage/app:1", appendLayers(t, registryImage(t, env.Image(testimages.BusyboxImage)), mutate.Addendum{Layer: markerLayer}))
	pod := guestPullPod(t, ctx, "sbx-veil-dev", guestPullInitData("", `{"default": [{"type": "insecureAcceptAnything"}]}`, nil))
	id := startAndWait(t, ctx, pod, "app", ref, "cat /marker; echo; sleep 3600")
	waitLogs(t, ctx, id, marker, time.Minute)

	blobs := runOut(t, ctx, env.NetNS.Command(ctx, env.Bin("ctr"), "--address", env.Address, "--namespace", "k8s.io", "content", "ls", "-q"))
	// Guest pull unchanged: the workload's layer never reached the host.
	if d, _ := markerLayer.Digest(); strings.Contains(blobs, d.String()) {
		t.Errorf("containerd's content store holds the guest-pulled layer %s", d)
	}
	// The sandbox image's layers did, and the snapshotter said why.
	layers, err := registryImage(t, pause).Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if d, _ := l.Digest(); !strings.Contains(blobs, d.String()) {
			t.Errorf("containerd's content store lacks layer %s of the sandbox image %s pulled for veil-dev", d, pause)
		}
	}
	dirs, files, sandbox := veilSnapshotFiles(t)
	if dirs < 2 || len(files) != 0 || sandbox == 0 {
		t.Errorf("veil snapshotter: %d directories, files %v, %d sandbox image files; want the sandbox image unpacked and no other file", dirs, files, sandbox)
	}
	snapLog, err := os.ReadFile(filepath.Join(env.LogDir, "snapshotter.log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "image=" + pause; !strings.Contains(string(snapLog), "native image") || !strings.Contains(string(snapLog), want) {
		t.Errorf("snapshotter.log does not say it prepared %s natively:\n%s", pause, snapLog)
	}

	// A runc pod on the same node: overlayfs unpacks the sandbox image
	// from containerd's content store (before the fix: content digest
	// ... not found).
	runcPod := runPod(t, ctx, harness.Runc, "sbx-runc")
	runcID := startAndWait(t, ctx, runcPod, "app", env.Image(testimages.StaticBusyboxImage), "echo runc-after-guest-pull; sleep 3600")
	waitLogs(t, ctx, runcID, "runc-after-guest-pull", time.Minute)
}

// veilSnapshotFiles walks the veil snapshotter's snapshot directories: it
// counts them and the sandbox image's file (/pause of the e2e pause
// image: the snapshotter prepares that image natively), and returns every
// other file, which a guest-pulled image must never leave on the host.
func veilSnapshotFiles(t *testing.T) (dirs int, files []string, sandbox int) {
	t.Helper()
	snaps := filepath.Join(env.SnapshotterRoot, "native", "snapshots")
	err := filepath.WalkDir(snaps, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(snaps, p)
		switch parts := strings.Split(rel, string(filepath.Separator)); {
		case d.IsDir():
			dirs++
		case len(parts) == 2 && parts[1] == "pause":
			sandbox++
		default:
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs, files, sandbox
}
