package initdata

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// cocoDoc is an init-data document as Confidential Containers users write
// it (Trustee's initdata spec, TOML): guest-components' attestation agent
// and confidential data hub configuration in [data], here with sha256 so
// veil can bind it.
func cocoDoc(aa, cdh string) string {
	return "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"aa.toml\" = '''\n" + aa + "'''\n\n\"cdh.toml\" = '''\n" + cdh + "'''\n"
}

// cocoAnnotation encodes a document as CoCo's tooling does for the
// cc_init_data annotation: gzip, then standard base64 on one line.
func cocoAnnotation(t *testing.T, doc string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(doc))
	zw.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestCoCoAnnotationMapsBroker(t *testing.T) {
	cert := testCertPEM(t)
	doc := cocoDoc(
		"[token_configs]\n[token_configs.kbs]\nurl = 'https://kbs.example:8080'\ncert = \"\"\"\n"+cert+"\"\"\"\n",
		"socket = 'unix:///run/confidential-containers/cdh.sock'\ncredentials = []\n\n[kbc]\nname = 'cc_kbc'\nurl = 'https://kbs.example:8080/'\n")
	raw, err := DecodeCoCoAnnotation(cocoAnnotation(t, doc) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != doc {
		t.Fatalf("decoded %q", raw)
	}
	d, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if d.Broker.URL != "https://kbs.example:8080" || strings.TrimSpace(d.Broker.Cert) != strings.TrimSpace(cert) {
		t.Fatalf("broker = %+v", d.Broker)
	}
	// The digest is over the pod's bytes, as a CoCo guest and Trustee
	// compute it: mapping changes nothing the TEE binds.
	if Digest(raw) != sha256.Sum256([]byte(doc)) {
		t.Fatal("digest is not over the document's bytes")
	}
	// cdh.toml alone names the broker too.
	d, err = Parse([]byte("algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\n\"cdh.toml\" = '''\n[kbc]\nname = 'cc_kbc'\nurl = 'https://kbs.example'\nkbs_cert = \"\"\"\n" + cert + "\"\"\"\n'''\n"))
	if err != nil || d.Broker.URL != "https://kbs.example" || d.Broker.Cert == "" {
		t.Fatalf("cdh.toml only: %+v, %v", d, err)
	}
}

func TestCoCoContentVeilCannotEnforce(t *testing.T) {
	kbs := "[token_configs.kbs]\nurl = 'https://kbs.example'\n"
	kbc := "[kbc]\nname = 'cc_kbc'\nurl = 'https://kbs.example'\n"
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"rego agent policy",
			"algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault ExecProcessRequest := false\n'''\n",
			`data."policy.rego": a Kata agent policy in Rego is not supported`},
		{"coco attestation service",
			cocoDoc("[token_configs.coco_as]\nurl = 'http://as:50004'\n"+kbs, kbc),
			`data."aa.toml": unsupported keys token_configs.coco_as; veil maps only [token_configs.kbs] url and cert`},
		{"event log",
			cocoDoc("[eventlog_config]\nenable_eventlog = true\n"+kbs, kbc),
			`unsupported keys eventlog_config`},
		{"cdh image settings",
			cocoDoc(kbs, kbc+"[image]\nimage_security_policy_uri = 'kbs:///default/security-policy/test'\n"),
			`data."cdh.toml": unsupported keys image; veil maps only [kbc] name, url and kbs_cert (image settings belong in [image])`},
		{"cdh credentials",
			cocoDoc(kbs, "[[credentials]]\nresource_uri = 'kbs:///default/key/1'\npath = '/run/key'\n"+kbc),
			`data."cdh.toml" credentials: expected none, seen 1`},
		{"offline kbc",
			cocoDoc(kbs, "[kbc]\nname = 'offline_fs_kbc'\nurl = ''\n"),
			`kbc.name: expected "cc_kbc"`},
		{"two brokers",
			cocoDoc(kbs, "[kbc]\nname = 'cc_kbc'\nurl = 'https://other.example'\n"),
			`cdh.toml kbc url: expected the broker "https://kbs.example", seen "https://other.example"`},
		{"broker table and aa.toml disagree",
			"algorithm = \"sha256\"\nversion = \"0.1.0\"\n[broker]\nurl = \"https://kbs.example\"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = 'https://evil.example'\n'''\n",
			`expected the broker "https://kbs.example", seen "https://evil.example"`},
		{"no url",
			cocoDoc("[token_configs.kbs]\ncert = ''\n", kbc),
			`aa.toml token_configs.kbs: no url`},
		{"sha384 document",
			strings.Replace(cocoDoc(kbs, kbc), `"sha256"`, `"sha384"`, 1),
			`init-data algorithm: "sha384", want "sha256"`},
		{"mapped url checked like broker.url",
			cocoDoc("[token_configs.kbs]\nurl = 'ftp://kbs.example'\n", "[kbc]\nname = 'cc_kbc'\nurl = 'ftp://kbs.example'\n"),
			`broker.url "ftp://kbs.example": scheme "ftp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v\nwant containing %s", err, tt.want)
			}
		})
	}
}

func TestDecodeCoCoAnnotationRejects(t *testing.T) {
	if _, err := DecodeCoCoAnnotation("not base64!"); err == nil || !strings.Contains(err.Error(), CoCoAnnotation) {
		t.Fatalf("bad base64: %v", err)
	}
	if _, err := DecodeCoCoAnnotation(base64.StdEncoding.EncodeToString([]byte("plain toml"))); err == nil || !strings.Contains(err.Error(), "decompressing annotation "+CoCoAnnotation) {
		t.Fatalf("not gzip: %v", err)
	}
	bomb := cocoAnnotation(t, strings.Repeat("a", MaxSize+10))
	if _, err := DecodeCoCoAnnotation(bomb); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("oversized document: %v", err)
	}
}
