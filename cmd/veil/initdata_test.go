package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/initdata"
)

func TestInitdataBuildPrintDigestCheck(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "agent.rego")
	if err := os.WriteFile(policy, []byte("package agent\ndefault ExecProcessRequest := false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "initdata.toml")
	var out bytes.Buffer
	if err := initdataCmd([]string{"build", "--broker-url", "https://kbs.example:8080", "--agent-policy", policy, "--file", "notes.txt=" + policy, "-o", doc}, &out); err != nil {
		t.Fatalf("build: %v", err)
	}
	raw, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := initdata.Parse(raw)
	if err != nil {
		t.Fatalf("built document does not parse: %v\n%s", err, raw)
	}
	if d.Broker.URL != "https://kbs.example:8080" || !strings.Contains(d.Agent.Policy, "ExecProcessRequest") || d.Data["notes.txt"] == "" {
		t.Fatalf("built document = %+v", d)
	}

	digest := func(field string, extra ...string) string {
		out.Reset()
		if err := initdataCmd(append([]string{"digest", "--field", field}, extra...), &out); err != nil {
			t.Fatalf("digest %s: %v", field, err)
		}
		return strings.TrimSpace(out.String())
	}
	sum := digest("sha256", doc)
	if len(sum) != 64 || digest("hostdata", doc) != sum || digest("mrconfigid", doc) != sum+strings.Repeat("0", 32) {
		t.Fatalf("digests disagree: %s / %s / %s", sum, digest("hostdata", doc), digest("mrconfigid", doc))
	}
	ann := digest("annotation", doc)
	if digest("sha256", "--annotation", ann) != sum {
		t.Fatal("digest of the annotation differs from the file's")
	}

	out.Reset()
	if err := initdataCmd([]string{"print", doc}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"https://kbs.example:8080", "# sha256:         " + sum, "# annotation io.veil.initdata=" + ann} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("print output misses %q:\n%s", want, out.String())
		}
	}

	if err := initdataCmd([]string{"check", "--digest", sum + strings.Repeat("0", 32), doc}, &out); err != nil {
		t.Fatalf("check with the mrconfigid value: %v", err)
	}
	if err := initdataCmd([]string{"check", "--digest", strings.Repeat("ab", 32), doc}, &out); err == nil || !strings.Contains(err.Error(), "expected abab") {
		t.Fatalf("check with a wrong digest: %v", err)
	}
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, append(raw, []byte("\n[extra]\nx = 1\n")...), 0o600)
	if err := initdataCmd([]string{"check", bad}, &out); err == nil || !strings.Contains(err.Error(), "unknown keys") {
		t.Fatalf("check of a document with unknown keys: %v", err)
	}
	if err := initdataCmd([]string{"build", "--broker-url", "ftp://x"}, &out); err == nil {
		t.Fatal("build accepted an ftp broker url")
	}
}

func TestInitdataBuildImageTable(t *testing.T) {
	var out bytes.Buffer
	args := []string{"build", "--broker-url", "https://kbs.example:8080",
		"--image-key", "kbs:///default/image-key/a", "--image-key", "kbs:///default/image-key/b",
		"--registry-auth", "kbs:///default/credentials/registry",
		"--mirror", "docker.io=m1.example", "--mirror", "docker.io=m2.example:5000"}
	if err := initdataCmd(args, &out); err != nil {
		t.Fatalf("build: %v", err)
	}
	d, err := initdata.Parse(out.Bytes())
	if err != nil {
		t.Fatalf("built document does not parse: %v\n%s", err, out.String())
	}
	if strings.Join(d.Image.Keys, ",") != "kbs:///default/image-key/a,kbs:///default/image-key/b" ||
		d.Image.RegistryAuth != "kbs:///default/credentials/registry" ||
		strings.Join(d.Image.Mirrors["docker.io"], ",") != "m1.example,m2.example:5000" {
		t.Fatalf("image table = %+v", d.Image)
	}
	accept := filepath.Join(t.TempDir(), "accept.json")
	os.WriteFile(accept, []byte(`{"default": [{"type": "insecureAcceptAnything"}]}`), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"build", "--image-key", "kbs://other.example/a/b/c"}, "image.keys[0]"},
		{[]string{"build", "--image-policy", accept, "--image-key", "kbs:///default/image-key/a"}, "default accepts images without a signature (insecureAcceptAnything) while the init-data gives image decryption keys"},
		{[]string{"build", "--mirror", "docker.io"}, "want REGISTRY=MIRROR"},
		{[]string{"build", "--mirror", "docker.io=https://m.example"}, "image.mirrors"},
		{[]string{"build", "--registry-roots", "/nonexistent/roots.pem"}, "/nonexistent/roots.pem"},
	} {
		if err := initdataCmd(tc.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
