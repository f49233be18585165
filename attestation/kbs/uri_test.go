package kbs

import "testing"

func TestParseResourceURI(t *testing.T) {
	tests := []struct {
		uri, host, path string
		ok              bool
	}{
		{"kbs:///default/key/disk", "", "default/key/disk", true},
		{"kbs://kbs.example:8080/default/key/disk", "kbs.example:8080", "default/key/disk", true},
		{"https:///default/key/disk", "", "", false},
		{"kbs:///default/key", "", "", false},
		{"kbs:///default//disk", "", "", false},
		{"kbs:///a/b/c/d", "", "", false},
	}
	for _, tt := range tests {
		host, path, err := ParseResourceURI(tt.uri)
		if (err == nil) != tt.ok || host != tt.host || path != tt.path {
			t.Errorf("ParseResourceURI(%q) = %q, %q, %v", tt.uri, host, path, err)
		}
	}
}
