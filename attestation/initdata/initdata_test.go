package initdata

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

const good = `version = "0.1.0"
algorithm = "sha256"

[broker]
url = "https://kbs.example:8080"

[agent]
policy = "default"

[data]
"notes.txt" = "x = 1"
`

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string
	}{
		{name: "good", doc: good},
		{name: "unknown top-level key", doc: "extra = 1\n" + good, wantErr: "unknown keys extra"},
		{name: "unknown nested key", doc: strings.Replace(good, "[agent]", "[agent]\nexec = true", 1), wantErr: "unknown keys agent.exec"},
		{name: "wrong version", doc: strings.Replace(good, `"0.1.0"`, `"0.2.0"`, 1), wantErr: "version"},
		{name: "wrong algorithm", doc: strings.Replace(good, `"sha256"`, `"md5"`, 1), wantErr: "algorithm"},
		{name: "bad broker scheme", doc: strings.Replace(good, "https://", "ftp://", 1), wantErr: "broker.url"},
		{name: "escaping data key", doc: good + `"../etc/passwd" = "x"` + "\n", wantErr: "data key"},
		{name: "not toml", doc: "= =", wantErr: "parsing init-data toml"},
		{name: "too large", doc: good + "# " + strings.Repeat("x", MaxSize), wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseRejectsNonPEMCert(t *testing.T) {
	doc := strings.Replace(good, "[agent]", "[agent]", 1)
	doc = strings.Replace(doc, `url = "https://kbs.example:8080"`, `url = "https://kbs.example:8080"`+"\ncert = \"junk\"", 1)
	if _, err := Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "broker.cert") {
		t.Fatalf("Parse error = %v, want broker.cert", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	d := &Document{Version: Version, Algorithm: Algorithm, Broker: Broker{URL: "https://b:1"}, Data: map[string]string{"f": "v"}}
	raw, err := Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse(Marshal): %v\n%s", err, raw)
	}
	if got.Broker.URL != d.Broker.URL || got.Data["f"] != "v" {
		t.Fatalf("round trip = %+v", got)
	}
}

func TestDigestFields(t *testing.T) {
	doc := []byte(good)
	d := Digest(doc)
	host := SNPHostData(doc)
	if !bytes.Equal(host[:], d[:]) {
		t.Fatalf("HOSTDATA %x != digest %x", host, d)
	}
	mr := TDXMRConfigID(doc)
	if !bytes.Equal(mr[:32], d[:]) || !bytes.Equal(mr[32:], make([]byte, 16)) {
		t.Fatalf("MRCONFIGID %x: want digest then 16 zero bytes", mr)
	}
	// The digest is of the exact bytes: a changed byte changes it.
	other := Digest([]byte(strings.Replace(good, "default", "Default", 1)))
	if other == d {
		t.Fatal("digest did not change with the document")
	}
	// Known answer, so the digest stays SHA-256 of the raw bytes.
	abc := Digest([]byte("abc"))
	if got := hex.EncodeToString(abc[:]); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("Digest(abc) = %s", got)
	}
}

func TestBrokerDigestFollowsAlgorithm(t *testing.T) {
	tests := []struct {
		alg  string
		size int
	}{{"sha256", 32}, {"sha384", 48}, {"sha512", 64}}
	for _, tt := range tests {
		doc := []byte(`algorithm = "` + tt.alg + `"`)
		d, err := BrokerDigest(doc)
		if err != nil || len(d) != tt.size {
			t.Errorf("BrokerDigest(%s) = %d bytes, %v; want %d", tt.alg, len(d), err, tt.size)
		}
	}
	if _, err := BrokerDigest([]byte(`algorithm = "md5"`)); err == nil {
		t.Error("BrokerDigest(md5) succeeded")
	}
}

func TestAnnotationRoundTrip(t *testing.T) {
	v, err := EncodeAnnotation([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAnnotation(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != good {
		t.Fatalf("round trip changed the document:\n%s", got)
	}
}

func TestDecodeAnnotationRejects(t *testing.T) {
	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	zw.Write(make([]byte, MaxSize+10))
	zw.Close()
	tests := []struct {
		name, value, want string
	}{
		{"not base64", "***", "base64"},
		{"not gzip", base64.StdEncoding.EncodeToString([]byte("plain")), "decompressing"},
		{"gzip bomb", base64.StdEncoding.EncodeToString(bomb.Bytes()), "more than"},
		{"value too long", strings.Repeat("A", MaxAnnotationSize+4), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeAnnotation(tt.value); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeAnnotation error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestQEMUValues(t *testing.T) {
	doc := []byte(good)
	h, err := base64.StdEncoding.DecodeString(QEMUHostData(doc))
	d := Digest(doc)
	if err != nil || !bytes.Equal(h, d[:]) {
		t.Fatalf("host-data decodes to %x, want %x", h, d)
	}
	m, err := base64.StdEncoding.DecodeString(QEMUMRConfigID(doc))
	if err != nil || len(m) != 48 || !bytes.Equal(m[:32], d[:]) {
		t.Fatalf("mrconfigid decodes to %x", m)
	}
}

func TestParseImageTable(t *testing.T) {
	cert := testCertPEM(t)
	base := `version = "0.1.0"
algorithm = "sha256"
`
	full := base + `
[image]
policy = '{"default": [{"type": "reject"}]}'
keys = ["kbs:///default/image-key/app"]
registry_auth = "kbs:///default/credentials/registry"
tls_roots = '''` + cert + `'''

[image.mirrors]
"127.0.0.1:5000" = ["10.88.0.1:5443", "mirror.example"]
`
	d, err := Parse([]byte(full))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if d.Image.Keys[0] != "kbs:///default/image-key/app" || d.Image.RegistryAuth != "kbs:///default/credentials/registry" ||
		len(d.Image.Mirrors["127.0.0.1:5000"]) != 2 || !strings.Contains(d.Image.TLSRoots, "BEGIN CERTIFICATE") {
		t.Fatalf("image table = %+v", d.Image)
	}
	tests := []struct {
		name, table, wantErr string
	}{
		{"policy not json", `policy = "default: reject"`, "image.policy: not JSON"},
		{"key with another scheme", `keys = ["file:///etc/key.pem"]`, `image.keys[0]: resource uri "file:///etc/key.pem": scheme "file"`},
		{"key naming another broker", `keys = ["kbs://evil.example/a/b/c"]`, `names broker "evil.example"`},
		{"key with two parts", `keys = ["kbs:///a/b"]`, "want kbs:///repo/type/tag"},
		{"auth not a uri", `registry_auth = "user:pass"`, "image.registry_auth"},
		{"mirror with scheme", "[image.mirrors]\n\"docker.io\" = [\"https://m.example\"]", `mirror "https://m.example": want host[:port]`},
		{"mirror key with path", "[image.mirrors]\n\"docker.io/library\" = [\"m.example\"]", `mirrors key "docker.io/library"`},
		{"no mirrors", "[image.mirrors]\n\"docker.io\" = []", "no mirrors listed"},
		{"roots not pem", `tls_roots = "junk"`, "image.tls_roots: no PEM certificate"},
		{"roots with a key", "tls_roots = '''-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'''", `PEM block "PRIVATE KEY"`},
		{"unknown image key", `insecure = true`, "unknown keys image.insecure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(base + "\n[image]\n" + tt.table + "\n"))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func testCertPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "registry"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestParseLimits(t *testing.T) {
	base := `version = "0.1.0"
algorithm = "sha256"
`
	d, err := Parse([]byte(base + `
[image]
max_layer_bytes = 1_073_741_824
max_layer_compressed_bytes = 536870912
max_layer_entries = 100000
max_image_bytes = 2147483648

[volumes]
max_volume_bytes = 1048576
max_volume_entries = 64
max_total_bytes = 4194304
max_total_entries = 256
`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (ImageLimits{MaxLayerBytes: 1 << 30, MaxLayerCompressedBytes: 1 << 29, MaxLayerEntries: 100000, MaxImageBytes: 2 << 30}); d.Image.ImageLimits != want {
		t.Errorf("image limits %+v, want %+v", d.Image.ImageLimits, want)
	}
	if want := (VolumeLimits{MaxVolumeBytes: 1 << 20, MaxVolumeEntries: 64, MaxTotalBytes: 4 << 20, MaxTotalEntries: 256}); d.Volumes != want {
		t.Errorf("volume limits %+v, want %+v", d.Volumes, want)
	}
	// Marshal writes them back under the same keys; a document without
	// them gains no [volumes] table.
	out, err := Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Parse(out); err != nil || again.Image.ImageLimits != d.Image.ImageLimits || again.Volumes != d.Volumes {
		t.Errorf("round trip: %+v %v\n%s", again, err, out)
	}
	out, _ = Marshal(&Document{Version: Version, Algorithm: Algorithm})
	if strings.Contains(string(out), "volumes") || strings.Contains(string(out), "max_") {
		t.Errorf("a document without caps marshals them:\n%s", out)
	}

	for _, tt := range []struct{ doc, wantErr string }{
		{"[image]\nmax_layer_bytes = -1", "init-data image.max_layer_bytes: -1 is negative"},
		{"[image]\nmax_image_bytes = -5", "init-data image.max_image_bytes: -5 is negative"},
		{"[volumes]\nmax_total_entries = -2", "init-data volumes.max_total_entries: -2 is negative"},
		{"[image]\nmax_layer_bytes = '1GiB'", "parsing init-data toml"},
		{"[volumes]\nmax_bytes = 1", "unknown keys volumes.max_bytes (known: "},
	} {
		_, err := Parse([]byte(base + tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q: error %v, want %q", tt.doc, err, tt.wantErr)
		}
	}
}

// TestKnownKeys pins the key list the unknown-key error offers, derived
// from the struct tags.
func TestKnownKeys(t *testing.T) {
	want := "version, algorithm, broker.url, broker.cert, agent.policy, image.policy, image.keys, image.registry_auth, image.mirrors, image.tls_roots, " +
		"image.max_layer_bytes, image.max_layer_compressed_bytes, image.max_layer_entries, image.max_image_bytes, " +
		"volumes.max_volume_bytes, volumes.max_volume_entries, volumes.max_total_bytes, volumes.max_total_entries, data"
	if got := strings.Join(KnownKeys(), ", "); got != want {
		t.Errorf("KnownKeys:\n got %s\nwant %s", got, want)
	}
	_, err := Parse([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\nbogus = 1\n"))
	if err == nil || !strings.Contains(err.Error(), "unknown keys bogus (known: "+want+")") {
		t.Errorf("unknown key error: %v", err)
	}
}
