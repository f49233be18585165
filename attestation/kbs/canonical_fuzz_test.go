package kbs

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzCanonicalize checks the JCS encoder against the standard library:
// what it accepts encoding/json accepts, its output decodes to the same
// value as its input, and canonicalizing its output changes nothing.
func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(`{"tee-pubkey":{"kty":"EC","crv":"P-384","x":"abc","y":"def"},"nonce":"n0"}`))
	f.Add([]byte(`{"b":1,"a":[true,false,null,"\u0007\"\\"],"€":{},"😀":-0}`))
	f.Add([]byte(` [ 1 , 2 ] `))
	f.Add([]byte(`{"a":1.5}`))
	f.Add([]byte(`{"a":1}{"b":2}`))
	f.Add([]byte(`"\ud800"`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		out, err := Canonicalize(doc)
		if err != nil {
			return
		}
		var in, got any
		if err := json.Unmarshal(doc, &in); err != nil {
			t.Fatalf("Canonicalize accepted %q, which encoding/json rejects: %v", doc, err)
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Canonicalize(%q) = %q, not JSON: %v", doc, out, err)
		}
		if !reflect.DeepEqual(in, got) {
			t.Fatalf("Canonicalize(%q) = %q decodes to %#v, want %#v", doc, out, got, in)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("Canonicalize(%q) = %q (%v), want it unchanged", out, again, err)
		}
	})
}

// Regression (found by FuzzCanonicalize): data after the first document
// was dropped without an error, so "{...}{...}" canonicalized, and hashed,
// as its first half.
func TestCanonicalizeRejectsTrailingData(t *testing.T) {
	for _, doc := range []string{`{"a":1}{"b":2}`, `{"a":1} x`, `1 2`} {
		if out, err := Canonicalize([]byte(doc)); err == nil {
			t.Errorf("Canonicalize(%q) = %q, want an error for the trailing data", doc, out)
		}
	}
	if out, err := Canonicalize([]byte(" {\"a\":1} \n")); err != nil || string(out) != `{"a":1}` {
		t.Errorf("Canonicalize with surrounding whitespace = %q, %v", out, err)
	}
}
