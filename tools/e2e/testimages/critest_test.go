package testimages

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// critest counts tags per image ID: its tag trio must be one image and
// every other image its own.
func TestCritestImagesDistinct(t *testing.T) {
	base := []Entry{File("bin/busybox", 0o755, []byte("busybox"))}
	specs := critestSpecs(base, v1.Config{Cmd: []string{"sh"}}, programs{pause: []byte("p"), web: []byte("w"), nnp: []byte("n")})
	owner := map[string]string{} // digest -> first image name
	for _, s := range specs {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		prev, seen := owner[d.String()]
		sameTrio := seen && strings.Contains(prev, "test-image-tags:") && strings.Contains(s.Name, "test-image-tags:")
		switch {
		case seen && !sameTrio:
			t.Errorf("%s and %s are the same image", prev, s.Name)
		case !seen && strings.Contains(s.Name, "test-image-tags:") && s.Name != "k8s-staging-cri-tools/test-image-tags:1":
			t.Errorf("%s differs from test-image-tags:1", s.Name)
		}
		if !seen {
			owner[d.String()] = s.Name
		}
	}
}

func TestCritestImageUsers(t *testing.T) {
	want := map[string]string{
		"k8s-staging-cri-tools/test-image-user-uid:latest":            "1002",
		"k8s-staging-cri-tools/test-image-user-username:latest":       "www-data",
		"k8s-staging-cri-tools/test-image-user-uid-group:latest":      "1003:1003",
		"k8s-staging-cri-tools/test-image-user-username-group:latest": "www-data:www-data",
		"k8s-staging-cri-tools/test-image-predefined-group:latest":    "1000",
	}
	for _, s := range critestSpecs(nil, v1.Config{}, programs{}) {
		if u, ok := want[s.Name]; ok && s.Config.User != u {
			t.Errorf("%s runs as %q, critest expects %q", s.Name, s.Config.User, u)
		}
		delete(want, s.Name)
	}
	if len(want) > 0 {
		t.Errorf("missing images: %v", want)
	}
}
