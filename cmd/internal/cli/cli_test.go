package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string // "" for success
		help    bool
	}{
		{args: []string{"--url", "u", "KEY", "FILE"}},
		{args: []string{"KEY", "FILE", "--url", "u"}, wantErr: `flag --url comes after the argument "KEY"`},
		{args: []string{"KEY", "-"}}, // "-" is stdin, an argument
		{args: []string{"--", "KEY", "--not-a-flag"}},
		{args: []string{"-h"}, help: true},
		{args: []string{"--help"}, help: true},
	} {
		fs := flag.NewFlagSet("resource set", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("url", "", "")
		err := Parse(fs, tc.args)
		switch {
		case tc.help:
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%q: %v, want flag.ErrHelp", tc.args, err)
			}
		case tc.wantErr == "":
			if err != nil {
				t.Errorf("%q: %v", tc.args, err)
			}
		case err == nil || !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.wantErr)
		}
	}
}

// TestBinaries builds every veil binary as the Makefile does (with the
// commit stamp) next to a guest image manifest, and runs each the way a
// person would: --version, version, --help, and a flag misplaced after a
// positional argument. What is checked is what the person sees: the exit
// status and the output.
func TestBinaries(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	manifest := []byte(`{"artifacts":{"initrd.img":{"sha256":"00"}}}`)
	if err := os.MkdirAll(filepath.Join(dir, "guest"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "guest", "manifest.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(manifest)
	guestLine := "guest image: sha256:" + hex.EncodeToString(sum[:])
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X github.com/veil-runtime/veil/cmd/internal/cli.commit=c0ffee", "-o", bin+"/",
		"../../containerd-shim-veil-v2", "../../veil", "../../veil-kbs", "../../veil-agent", "../../veil-snapshotter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	const commit = "commit: c0ffee"
	for _, tc := range []struct {
		cmd  []string
		code int
		want []string // in stdout+stderr
	}{
		{[]string{"containerd-shim-veil-v2", "--version"}, 0, []string{commit, guestLine}},
		{[]string{"containerd-shim-veil-v2", "-v"}, 0, []string{commit, guestLine}},
		{[]string{"containerd-shim-veil-v2", "--help"}, 0, []string{"-namespace"}},
		{[]string{"veil", "version"}, 0, []string{commit, guestLine}},
		{[]string{"veil", "--version"}, 0, []string{commit, guestLine}},
		{[]string{"veil", "--help"}, 0, []string{"version", "check"}},
		{[]string{"veil", "check", "--help"}, 0, []string{"-guest-dir"}},
		{[]string{"veil", "image", "encrypt", "--help"}, 0, nil},
		{[]string{"veil", "check", "extra", "--json"}, 1, []string{`flag --json comes after the argument "extra"`}},
		{[]string{"veil", "nonsense"}, 1, []string{`unknown command "nonsense"`}},
		{[]string{"veil-kbs", "version"}, 0, []string{commit, guestLine}},
		{[]string{"veil-kbs", "--version"}, 0, []string{commit, guestLine}},
		{[]string{"veil-kbs", "--help"}, 0, []string{"resource set"}},
		{[]string{"veil-kbs", "serve", "--help"}, 0, []string{"-tls-cert"}},
		{[]string{"veil-kbs", "resource", "set", "--help"}, 0, []string{"-url"}},
		// Regression: this wrote to the default broker, ignoring --url.
		{[]string{"veil-kbs", "resource", "set", "--admin-token-file", token, "default/key/k", token, "--url", "http://127.0.0.1:1"}, 1,
			[]string{`flag --url comes after the argument "default/key/k"`}},
		{[]string{"veil-agent", "--version"}, 0, []string{commit}},
		{[]string{"veil-agent", "--help"}, 0, []string{"PID 1"}},
		{[]string{"veil-snapshotter", "--version"}, 0, []string{commit, guestLine}},
		{[]string{"veil-snapshotter", "version"}, 0, []string{commit, guestLine}},
		{[]string{"veil-snapshotter", "--help"}, 0, []string{"-address"}},
		{[]string{"veil-snapshotter", "extra", "--root", "/x"}, 1, []string{`flag --root comes after the argument "extra"`}},
	} {
		cmd := exec.Command(filepath.Join(bin, tc.cmd[0]), tc.cmd[1:]...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", strings.Join(tc.cmd, " "), code, tc.code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s: output lacks %q:\n%s", strings.Join(tc.cmd, " "), w, out)
			}
		}
	}
}
