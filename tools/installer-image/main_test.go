package main

import (
	"archive/tar"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// fakeInputs writes stand-ins for the built binaries and guest image.
func fakeInputs(t *testing.T) Inputs {
	t.Helper()
	dir := t.TempDir()
	in := Inputs{BinDir: filepath.Join(dir, "bin"), GuestDir: filepath.Join(dir, "guest"), Busybox: filepath.Join(dir, "busybox"), Version: "v0.1.0"}
	for _, d := range []string{in.BinDir, in.GuestDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) {
		if err := os.WriteFile(p, []byte("content of "+filepath.Base(p)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range Binaries {
		write(filepath.Join(in.BinDir, b))
	}
	for _, g := range GuestFiles {
		write(filepath.Join(in.GuestDir, g))
	}
	write(in.Busybox)
	return in
}

// files lists the image's flattened file system: path -> header.
func files(t *testing.T, in Inputs) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	spec, err := Spec(in)
	if err != nil {
		t.Fatal(err)
	}
	img, err := testimages.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := strings.TrimPrefix(path.Clean(h.Name), "/")
		hdrs[p] = h
		b, _ := io.ReadAll(tr)
		data[p] = string(b)
	}
	return hdrs, data
}

func TestLayout(t *testing.T) {
	in := fakeInputs(t)
	hdrs, data := files(t, in)
	for p, want := range map[string]string{
		"usr/local/bin/veil":                    "content of veil",
		"usr/local/bin/containerd-shim-veil-v2": "content of containerd-shim-veil-v2",
		"usr/local/bin/veil-snapshotter":        "content of veil-snapshotter",
		"usr/local/share/veil/vmlinuz":          "content of vmlinuz",
		"usr/local/share/veil/initrd.img":       "content of initrd.img",
		"usr/local/share/veil/manifest.json":    "content of manifest.json",
		"bin/busybox":                           "content of busybox",
	} {
		if data[p] != want {
			t.Errorf("%s holds %q, want %q", p, data[p], want)
		}
	}
	if m := hdrs["usr/local/bin/veil"].Mode; m&0o111 == 0 {
		t.Errorf("veil is not executable: %o", m)
	}
	if h := hdrs["usr/bin/test"]; h == nil || h.Typeflag != tar.TypeLink || strings.TrimPrefix(h.Linkname, "/") != "bin/busybox" {
		t.Errorf("usr/bin/test is not a hard link to bin/busybox: %+v", h)
	}

	// Missing inputs are named.
	in.GuestDir = filepath.Join(t.TempDir(), "nope")
	if _, err := Spec(in); err == nil || !strings.Contains(err.Error(), filepath.Join(in.GuestDir, "vmlinuz")) {
		t.Errorf("missing guest image: %v", err)
	}
}

// TestDaemonSetRunsInImage: what the DaemonSet runs exists in the image
// where the DaemonSet expects it, and `veil install` finds the guest image
// next to itself (BIN-DIR/../share/veil).
func TestDaemonSetRunsInImage(t *testing.T) {
	b, err := os.ReadFile("../../runtimeclass/base/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		t.Fatal(err)
	}
	hdrs, _ := files(t, fakeInputs(t))
	spec, _ := Spec(fakeInputs(t))
	pathDirs := strings.Split(strings.TrimPrefix(spec.Config.Env[0], "PATH="), ":")
	lookup := func(cmd string) bool {
		if strings.HasPrefix(cmd, "/") {
			return hdrs[strings.TrimPrefix(cmd, "/")] != nil
		}
		for _, d := range pathDirs {
			if hdrs[strings.TrimPrefix(path.Join(d, cmd), "/")] != nil {
				return true
			}
		}
		return false
	}
	for _, c := range ds.Spec.Template.Spec.Containers {
		if !strings.HasPrefix(c.Image, strings.Split(DefaultRef, ":")[0]+":") {
			t.Errorf("DaemonSet container %s image %q is not %s", c.Name, c.Image, DefaultRef)
		}
		if len(c.Command) == 0 || !lookup(c.Command[0]) {
			t.Errorf("DaemonSet container %s command %q is not in the image", c.Name, c.Command)
		}
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || !lookup(p.Exec.Command[0]) {
		t.Errorf("readiness probe %+v runs a command the image lacks", p)
	}
	share := path.Join(path.Dir(path.Dir(strings.TrimPrefix(c.Command[0], "/"))), "share/veil/initrd.img")
	if hdrs[share] == nil {
		t.Errorf("guest image not at %s (BIN-DIR/../share/veil, where veil install looks)", share)
	}
}

func TestDeterministic(t *testing.T) {
	in := fakeInputs(t)
	digest := func() string {
		spec, err := Spec(in)
		if err != nil {
			t.Fatal(err)
		}
		img, err := testimages.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	if a, b := digest(), digest(); a != b {
		t.Errorf("two builds: %s and %s", a, b)
	}
}

// A dynamically linked binary (a race-built one, or Debian's /bin/true) is
// refused, naming it and its interpreter: the image has no C library.
func TestDynamicBinaryRefused(t *testing.T) {
	in := fakeInputs(t)
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	veil := filepath.Join(in.BinDir, "veil")
	if err := os.WriteFile(veil, b, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Spec(in)
	if err == nil || !strings.Contains(err.Error(), veil) || !strings.Contains(err.Error(), "ld-linux") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("Spec with a dynamically linked veil: %v, want a refusal naming it, its interpreter and CGO_ENABLED=0", err)
	}
}
