package containerdcfg

import (
	"os"
	"slices"
	"strings"
	"testing"
)

const dropIn = "/etc/containerd/conf.d/veil.toml"

// Fake containerd configs: a 1.7-style version 2 file, 2.x version 3 files,
// with and without imports, comments, and unusual formatting. want is the
// exact edited file.
var importCases = []struct {
	name, in, want string
}{
	{
		name: "1.7 version 2, no imports",
		in: `# containerd 1.7 config written by the distro
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`,
		want: `# containerd 1.7 config written by the distro
version = 2
imports = ["/etc/containerd/conf.d/veil.toml"]
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
`,
	},
	{
		name: "2.x version 3, empty imports (the e2e harness's)",
		in:   "version = 3\nroot = \"/r\"\nimports = []\n\n[grpc]\n  address = \"/s\"\n",
		want: "version = 3\nroot = \"/r\"\nimports = [\"/etc/containerd/conf.d/veil.toml\"]\n\n[grpc]\n  address = \"/s\"\n",
	},
	{
		name: "one import, literal string, no spaces",
		in:   "version=3\nimports=['/etc/other.toml']\n",
		want: "version=3\nimports=['/etc/other.toml', \"/etc/containerd/conf.d/veil.toml\"]\n",
	},
	{
		name: "multi-line imports with trailing comma and comments",
		in: `version = 3
imports = [
  "/etc/a.toml", # first
  # a comment line with ] and [ in it
  '/etc/b.toml',   # second
]
[plugins]
`,
		want: `version = 3
imports = [
  "/etc/a.toml", # first
  # a comment line with ] and [ in it
  '/etc/b.toml', "/etc/containerd/conf.d/veil.toml",   # second
]
[plugins]
`,
	},
	{
		name: "no version, comments first",
		in:   "# hand-written\n\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  enable_cdi = true\n",
		want: "imports = [\"/etc/containerd/conf.d/veil.toml\"]\n# hand-written\n\n[plugins.\"io.containerd.cri.v1.runtime\"]\n  enable_cdi = true\n",
	},
	{
		name: "CRLF line breaks and version with a comment",
		in:   "version = 3 # v3\r\noom_score = 0\r\n[debug]\r\n  level = \"info\"\r\n",
		want: "version = 3 # v3\r\nimports = [\"/etc/containerd/conf.d/veil.toml\"]\r\noom_score = 0\r\n[debug]\r\n  level = \"info\"\r\n",
	},
	{
		name: "no final newline after version",
		in:   "version = 3",
		want: "version = 3\nimports = [\"/etc/containerd/conf.d/veil.toml\"]",
	},
	{
		name: "empty file",
		in:   "",
		want: "imports = [\"/etc/containerd/conf.d/veil.toml\"]\n",
	},
	{
		name: "quoted imports key, multi-line string value holding a fake table header",
		in: `version = 3
motd = """
[not.a.table]
imports = ["/nope"]
"""
"imports" = ["/etc/x.toml"]
[plugins]
`,
		want: `version = 3
motd = """
[not.a.table]
imports = ["/nope"]
"""
"imports" = ["/etc/x.toml", "/etc/containerd/conf.d/veil.toml"]
[plugins]
`,
	},
	{
		name: "imports after other tables' lookalikes and an inline table",
		in:   "version = 3\nx = { a = \"]\", b = [1, 2] }\nimports = [ ]\n",
		want: "version = 3\nx = { a = \"]\", b = [1, 2] }\nimports = [\"/etc/containerd/conf.d/veil.toml\" ]\n",
	},
}

func TestAddImportThenRemoveImport(t *testing.T) {
	for _, tc := range importCases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := AddImport([]byte(tc.in), dropIn, "config.toml")
			if err != nil {
				t.Fatal(err)
			}
			got := e.Apply([]byte(tc.in))
			if string(got) != tc.want {
				t.Fatalf("edited config:\n%s\nwant:\n%s", got, tc.want)
			}
			cfg, err := Parse(got, "config.toml")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(cfg.Imports, dropIn) {
				t.Errorf("imports %q lack %s", cfg.Imports, dropIn)
			}
			back, err := RemoveImport(got, e, dropIn, "config.toml")
			if err != nil {
				t.Fatal(err)
			}
			if string(back) != tc.in {
				t.Fatalf("after RemoveImport:\n%q\nwant the original:\n%q", back, tc.in)
			}
		})
	}
}

// The admin edits the config after install: uninstall still takes out only
// veil's import and keeps the admin's change.
func TestRemoveImportAfterTheFileChanged(t *testing.T) {
	orig := "version = 3\nimports = [\"/etc/a.toml\"]\n[debug]\n  level = \"info\"\n"
	e, err := AddImport([]byte(orig), dropIn, "c")
	if err != nil {
		t.Fatal(err)
	}
	installed := string(e.Apply([]byte(orig)))
	changed := "# added by the admin\n" + strings.Replace(installed, `"info"`, `"debug"`, 1)
	got, err := RemoveImport([]byte(changed), e, dropIn, "c")
	if err != nil {
		t.Fatal(err)
	}
	want := "# added by the admin\n" + strings.Replace(orig, `"info"`, `"debug"`, 1)
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}

	// The admin removed veil's import themselves: refuse, change nothing.
	if _, err := RemoveImport([]byte(orig), e, dropIn, "c"); err == nil || !strings.Contains(err.Error(), "by hand") {
		t.Fatalf("RemoveImport on a file without the import: %v, want an error saying to fix it by hand", err)
	}
}

func TestAddImportRefuses(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not TOML", "version = 3\n[plugins\n", "config.toml:2"},
		{"imports not an array", "imports = \"/etc/a.toml\"\n", "not an array"},
		{"duplicate key", "version = 3\nversion = 2\n", "not valid TOML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := AddImport([]byte(tc.in), dropIn, "config.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	stock, err := os.ReadFile("testdata/containerd-2.4-default.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		in       string
		version  int
		imports  []string
		runtimes []string
		sandbox  string
		err      string
	}{
		{name: "containerd 2.4 default", in: string(stock), version: 4, imports: []string{"/etc/containerd/conf.d/*.toml"}, runtimes: []string{"runc"}, sandbox: "registry.k8s.io/pause:3.10.2"},
		{name: "version 3 pinned sandbox", in: "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\nsandbox = 'example.com/pause@sha256:" + strings.Repeat("a", 64) + "'\n", version: 3, sandbox: "example.com/pause@sha256:" + strings.Repeat("a", 64)},
		{name: "version 3 ignores the version 2 key", in: "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = 'example.com/pause:1'\n", version: 3},
		{name: "version 2 sandbox_image", in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"k8s.gcr.io/pause:3.2\"\n", version: 2, sandbox: "k8s.gcr.io/pause:3.2"},
		{name: "version 1 cri sandbox_image", in: "[plugins.cri]\nsandbox_image = \"pause:3.1\"\n", version: 1, sandbox: "pause:3.1"},
		{name: "sandbox not a string", in: "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\nsandbox = 3\n", err: "pinned_images.sandbox: 3 is not a string"},
		{name: "no version", in: "", version: 1},
		{name: "version 2 runtimes", in: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.kata]\n", version: 2, runtimes: []string{"kata"}},
		{name: "version 1 cri key", in: "[plugins.cri.containerd.runtimes.veil]\n", version: 1, runtimes: []string{"veil"}},
		{name: "version 5", in: "version = 5\n", err: "version 5 is not one veil knows"},
		{name: "version a string", in: "version = \"3\"\n", err: "not an integer"},
		{name: "bad imports entry", in: "imports = [3]\n", err: "not a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.in), "c.toml")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Version != tc.version || !slices.Equal(c.Imports, tc.imports) || !slices.Equal(c.Runtimes, tc.runtimes) || c.SandboxImage != tc.sandbox {
				t.Fatalf("got %+v, want version %d imports %q runtimes %q sandbox image %q", c, tc.version, tc.imports, tc.runtimes, tc.sandbox)
			}
		})
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		imports []string
		want    bool
	}{
		{[]string{"/etc/containerd/conf.d/*.toml"}, true},
		{[]string{"conf.d/*.toml"}, true}, // relative to the config's directory
		{[]string{"/etc/containerd/conf.d/veil.toml"}, true},
		{[]string{"/etc/containerd/conf.d//veil.toml"}, true},
		{[]string{"/etc/containerd/conf.d/*.conf"}, false},
		{[]string{"/etc/containerd/*.toml"}, false},
		{nil, false},
	} {
		if got := Covers(tc.imports, "/etc/containerd/config.toml", dropIn); got != tc.want {
			t.Errorf("Covers(%q) = %v, want %v", tc.imports, got, tc.want)
		}
	}
}
