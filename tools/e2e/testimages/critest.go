package testimages

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CritestRegistries are the registries critest's images come from. The
// harness mirrors each of them to the local registry (containerd hosts.toml),
// so critest runs with its own image names and no -registry-prefix.
var CritestRegistries = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}

// CritestDigestImage is the one critest image that cannot be rebuilt: critest
// pulls it by a digest of an upstream image. Its cases fail on every handler.
const CritestDigestImage = "k8s-staging-cri-tools/test-image-digest"

type programs struct{ pause, web, nnp []byte }

// critestSpecs returns critest v1.37.0's images (pkg/validate/consts.go,
// pkg/framework/util.go) under their repository paths. Images that only need
// to exist are busybox; the ones critest inspects get what it checks for.
func critestSpecs(base []Entry, sh v1.Config, p programs) []Spec {
	const staging = "k8s-staging-cri-tools/"
	const e2e = "e2e-test-images/"
	// busybox returns the base image plus a layer marking it with id, so
	// that images critest expects to be distinct have distinct IDs (it
	// counts the tags of an image); images sharing id are one image.
	busybox := func(name, id string, extra ...Entry) Spec {
		layer := append([]Entry{File(".critest-image", 0o644, []byte(id+"\n"))}, extra...)
		return Spec{Name: name, Layers: [][]Entry{base, layer}, Config: sh}
	}
	repo := func(name string) string { return strings.SplitN(name, ":", 2)[0] }
	own := func(name string, extra ...Entry) Spec { return busybox(name, name, extra...) }
	withUser := func(name, user string) Spec {
		s := own(name)
		s.Config.User = user
		return s
	}
	web := func(name, binary string, args ...string) Spec {
		s := own(name, File(binary, 0o755, p.web), Dir("var/run", 0o755))
		s.Config.Entrypoint = append([]string{"/" + binary}, args...)
		s.Config.Cmd = nil
		return s
	}
	predefined := own(staging+"test-image-predefined-group:latest",
		File("etc/passwd", 0o644, []byte(passwd+"default-user:x:1000:1000::/home/default-user:/bin/sh\n")),
		File("etc/group", 0o644, []byte(group+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")),
		Entry{Path: "home/default-user", Mode: 0o755, Dir: true, UID: 1000, GID: 1000},
	)
	predefined.Config.User = "1000"

	nnp := own(e2e+"nonewprivs:1.3", File("nonewprivs", 0o4755, p.nnp))
	nnp.Config.Entrypoint = []string{"/nonewprivs"}
	nnp.Config.Cmd = nil

	return []Spec{
		own(e2e + "busybox:1.29-2"),
		// critest waits for "master process" in nginx's /proc/1/cmdline.
		web(e2e+"nginx:1.14-2", "usr/sbin/nginx", "-port", "80", "-pidfile", "/var/run/nginx.pid", "-banner", "nginx: master process"),
		web(e2e+"httpd:2.4.39-4", "usr/sbin/httpd", "-port", "80", "-banner", "httpd"),
		web(staging+"hostnet-nginx-amd64:latest", "usr/sbin/nginx", "-port", "12003", "-banner", "nginx"),
		nnp,
		withUser(staging+"test-image-user-uid:latest", "1002"),
		withUser(staging+"test-image-user-username:latest", "www-data"),
		withUser(staging+"test-image-user-uid-group:latest", "1003:1003"),
		withUser(staging+"test-image-user-username-group:latest", "www-data:www-data"),
		predefined,
		own(staging + "test-image-latest:latest"),
		own(staging + "test-image-tag:test"),
		own(staging + "test-image-tag:all"),
		own(staging + "test-image-1:latest"),
		own(staging + "test-image-2:latest"),
		own(staging + "test-image-3:latest"),
		// One image under three tags.
		busybox(staging+"test-image-tags:1", repo(staging+"test-image-tags:1")),
		busybox(staging+"test-image-tags:2", repo(staging+"test-image-tags:2")),
		busybox(staging+"test-image-tags:3", repo(staging+"test-image-tags:3")),
		// Labelled so it differs from the sandbox image: critest counts
		// the tags of this one.
		{Name: "pause:3.9", Layers: [][]Entry{{File("pause", 0o755, p.pause)}}, Config: v1.Config{
			Entrypoint: []string{"/pause"}, Labels: map[string]string{"org.veil-runtime.e2e": "critest"}}},
	}
}
