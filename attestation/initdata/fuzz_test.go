package initdata

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse feeds Parse what a host (the pod annotation) or a pod author
// can write: it never panics; a document it accepts validates, survives
// Marshal and Parse unchanged, and its annotation encoding decodes to the
// same bytes (so the digest the guest computes is the one the runtime
// bound). Unknown keys are always refused naming them.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[agent]\npolicy = '''\nallow_read_output = true\n'''\n"))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[image]\nkeys = [\"kbs:///a/b/c\"]\nmirrors = {\"docker.io\" = [\"m:5000\"]}\nmax_layer_bytes = 1\n"))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[volumes]\nmax_volume_bytes = -1\n"))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\nbogus = 1\n"))
	f.Add([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"../x\" = \"y\"\n"))
	f.Add([]byte(cocoDoc("[token_configs.kbs]\nurl = 'https://k'\n", "[kbc]\nname = 'cc_kbc'\nurl = 'https://k'\n")))
	f.Fuzz(func(t *testing.T, doc []byte) {
		d, err := Parse(doc)
		if err != nil {
			if strings.Contains(err.Error(), "unknown keys") && !strings.Contains(err.Error(), "known:") {
				t.Fatalf("unknown-key error without the known keys: %v", err)
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("accepted a document that does not validate: %v", err)
		}
		out, err := Marshal(d)
		if err != nil {
			return // a document at the size limit may grow when re-encoded
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded document does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normalizeDoc(d), normalizeDoc(back)) {
			t.Fatalf("document changed through Marshal:\n%+v\n%+v", d, back)
		}
		ann, err := EncodeAnnotation(doc)
		if err != nil {
			return // larger than an annotation may be
		}
		raw, err := DecodeAnnotation(ann)
		if err != nil || !bytes.Equal(raw, doc) || Digest(raw) != Digest(doc) {
			t.Fatalf("annotation round trip: %v", err)
		}
	})
}

// normalizeDoc makes empty and absent tables and lists compare equal (TOML
// writes neither).
func normalizeDoc(d *Document) Document {
	c := *d
	if len(c.Data) == 0 {
		c.Data = nil
	}
	if len(c.Image.Keys) == 0 {
		c.Image.Keys = nil
	}
	if len(c.Image.Mirrors) == 0 {
		c.Image.Mirrors = nil
	}
	return c
}
