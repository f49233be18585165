package containers

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRewriteSpec(t *testing.T) {
	raw := []byte(`{
		"ociVersion": "1.0.2",
		"process": {"args": ["sh"], "cwd": "/", "terminal": false},
		"root": {"path": "/var/lib/containerd/host/rootfs", "readonly": true},
		"hooks": {"prestart": [{"path": "/usr/bin/host-hook"}]},
		"linux": {
			"cgroupsPath": "kubepods-besteffort.slice:cri-containerd:abc",
			"namespaces": [
				{"type": "pid"},
				{"type": "network", "path": "/var/run/netns/cni-1"},
				{"type": "ipc", "path": "/proc/42/ns/ipc"},
				{"type": "uts"},
				{"type": "mount"},
				{"type": "cgroup", "path": "/proc/42/ns/cgroup"}
			]
		}
	}`)
	for _, tc := range []struct {
		name   string
		pidns  string
		wantNS []specs.LinuxNamespace
	}{
		{"own pid namespace", "", []specs.LinuxNamespace{
			{Type: "pid"}, {Type: "uts"}, {Type: "mount"}, {Type: "cgroup"},
		}},
		{"sandbox pid namespace", "/proc/7/ns/pid", []specs.LinuxNamespace{
			{Type: "pid", Path: "/proc/7/ns/pid"}, {Type: "uts"}, {Type: "mount"}, {Type: "cgroup"},
		}},
	} {
		s, err := RewriteSpec(raw, Rewrite{ID: "c1", Rootfs: "/run/veil/shared/c1/rootfs", Terminal: true, PIDNamespace: tc.pidns})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.Root.Path != "/run/veil/shared/c1/rootfs" || !s.Root.Readonly {
			t.Errorf("%s: root = %+v", tc.name, s.Root)
		}
		if !s.Process.Terminal {
			t.Errorf("%s: terminal not set from the request", tc.name)
		}
		if s.Linux.CgroupsPath != "/veil/c1" {
			t.Errorf("%s: cgroupsPath = %q", tc.name, s.Linux.CgroupsPath)
		}
		if s.Hooks != nil {
			t.Errorf("%s: host hooks kept", tc.name)
		}
		if !reflect.DeepEqual(s.Linux.Namespaces, tc.wantNS) {
			t.Errorf("%s: namespaces = %+v, want %+v", tc.name, s.Linux.Namespaces, tc.wantNS)
		}
	}
}

func TestRewriteSpecAddsSandboxPIDNamespace(t *testing.T) {
	s, err := RewriteSpec([]byte(`{"process":{"args":["true"]}}`), Rewrite{ID: "c", Rootfs: "/r", PIDNamespace: "/proc/9/ns/pid"})
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.LinuxNamespace{{Type: "pid", Path: "/proc/9/ns/pid"}, {Type: "cgroup"}}
	if !reflect.DeepEqual(s.Linux.Namespaces, want) {
		t.Fatalf("namespaces = %+v, want %+v", s.Linux.Namespaces, want)
	}
}

func TestRewriteSpecRejectsBadSpecs(t *testing.T) {
	for _, raw := range []string{`{`, `[]`, `{"process": null}`, `{"process": {"args": []}}`, `{"process": "sh"}`} {
		if _, err := RewriteSpec([]byte(raw), Rewrite{ID: "c", Rootfs: "/r"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("RewriteSpec(%s) error = %v, want InvalidArgument", raw, err)
		}
	}
}

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{
		"c1": true, "abc_def.1+2-3": true, strings.Repeat("a", 1024): true,
		"": false, "..": false, "a/b": false, ".hidden": false, "-x": false, "a b": false,
		strings.Repeat("a", 1025): false,
	} {
		err := CheckID("container id", id)
		if (err == nil) != ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", id, err, ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CheckID(%q) error %v is not InvalidArgument", id, err)
		}
	}
}

func TestParseProcess(t *testing.T) {
	p, err := ParseProcess([]byte(`{"args":["ls"],"terminal":true}`), false)
	if err != nil || p.Terminal || p.Cwd != "/" || p.Args[0] != "ls" {
		t.Fatalf("ParseProcess = %+v, %v", p, err)
	}
	for _, raw := range []string{`x`, `{}`, `{"args":[]}`} {
		if _, err := ParseProcess([]byte(raw), false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseProcess(%s) error = %v, want InvalidArgument", raw, err)
		}
	}
	if _, err := ParseResources([]byte(`{"memory":{"limit":"x"}}`)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ParseResources with a string limit: %v, want InvalidArgument", err)
	}
}

func TestOOMKills(t *testing.T) {
	for content, want := range map[string]uint64{
		"low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n": 2,
		"oom 1\n": 0,
		"":        0,
	} {
		if got := OOMKills(content); got != want {
			t.Errorf("OOMKills(%q) = %d, want %d", content, got, want)
		}
	}
}

func TestLastRuncError(t *testing.T) {
	log := `{"level":"info","msg":"starting","time":"t"}
{"level":"error","msg":"first","time":"t"}
not json
{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"t"}
{"level":"warning","msg":"later","time":"t"}
`
	if got := LastRuncError([]byte(log)); got != `exec: "nope": executable file not found in $PATH` {
		t.Fatalf("got %q", got)
	}
	if got := LastRuncError(nil); got != "" {
		t.Fatalf("empty log: got %q", got)
	}
}

func TestJoinsPodPIDNamespace(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}`: true,
		`{"linux":{"namespaces":[{"type":"pid"}]}}`:                         false,
		`{"linux":{"namespaces":[{"type":"ipc","path":"/proc/1/ns/ipc"}]}}`: false,
		`{}`:   false,
		`nope`: false,
	} {
		if got := JoinsPodPIDNamespace([]byte(raw)); got != want {
			t.Errorf("JoinsPodPIDNamespace(%s) = %v, want %v", raw, got, want)
		}
	}
}

func TestRewriteSpecVersion(t *testing.T) {
	raw := []byte(`{"ociVersion":"1.2.1","process":{"args":["true"]}}`)
	s, err := RewriteSpec(raw, Rewrite{ID: "c", Rootfs: "/r", SpecVersion: "1.0.2"})
	if err != nil || s.Version != "1.0.2" {
		t.Fatalf("with SpecVersion: version %q, %v; want 1.0.2", s.Version, err)
	}
	s, err = RewriteSpec(raw, Rewrite{ID: "c", Rootfs: "/r"})
	if err != nil || s.Version != "1.2.1" {
		t.Fatalf("without SpecVersion: version %q, %v; want the host's 1.2.1", s.Version, err)
	}
}
