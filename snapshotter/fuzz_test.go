package snapshotter

import (
	"testing"
)

// FuzzDecide feeds Decide the labels containerd passes (the CRI's image
// reference and manifest digest come from whatever the user asked to
// pull): it never panics, skips only CRI layers, and prepares one
// natively only when a native image really matches.
func FuzzDecide(f *testing.F) {
	f.Add("sha256:c1", "registry.k8s.io/pause:3.10.2", "")
	f.Add("sha256:c1", "registry.k8s.io/pause@sha256:"+"1111111111111111111111111111111111111111111111111111111111111111", "")
	f.Add("sha256:c1", "reg/app:1", "sha256:"+"2222222222222222222222222222222222222222222222222222222222222222")
	f.Add("", "pause:3.10", "")
	f.Add("c", "Registry.k8s.io/PAUSE:1", "")
	native := []NativeImage{
		mustNativeF(f, "registry.k8s.io/pause:3.10.2"),
		mustNativeF(f, "127.0.0.1:5000/pause@sha256:"+"2222222222222222222222222222222222222222222222222222222222222222"),
		mustNativeF(f, "docker.io/library/pause"),
	}
	f.Fuzz(func(t *testing.T, target, ref, manifest string) {
		labels := map[string]string{LabelTarget: target, LabelImageRef: ref, LabelManifestDigest: manifest}
		d := Decide(labels, native)
		cri := target != "" && ref != ""
		if d.Skip && !cri {
			t.Fatalf("Decide(%q) skips a prepare without the CRI's labels", labels)
		}
		if d.Native != nil && (d.Skip || !cri || !d.Native.Matches(ref, manifest)) {
			t.Fatalf("Decide(%q) = %+v: native without a match", labels, d)
		}
		if cri && !d.Skip && d.Native == nil {
			t.Fatalf("Decide(%q) = %+v: a CRI layer neither skipped nor native", labels, d)
		}
	})
}

func mustNativeF(f *testing.F, ref string) NativeImage {
	n, err := ParseNativeImage(ref, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	return n
}
