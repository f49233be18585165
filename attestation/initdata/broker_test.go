package initdata

import (
	"strings"
	"testing"
)

// TestCheckBrokerFor: outside veil-dev the broker must be reached over
// https; the refusal names the field, the TEE, what is expected and seen.
func TestCheckBrokerFor(t *testing.T) {
	tests := []struct {
		url, tee, want string // want "" accepts
	}{
		{"https://kbs.example:8080", "snp", ""},
		{"https://kbs.example:8080", "tdx", ""},
		{"", "snp", ""},
		{"http://10.0.0.1:8080", "sample", ""},
		{"http://10.0.0.1:8080", "snp", `init-data broker.url "http://10.0.0.1:8080": expected https for a snp guest`},
		{"http://127.0.0.1:8080", "tdx", "expected https for a tdx guest"},
		{"HTTP://kbs.example", "snp", "seen http"},
	}
	for _, tt := range tests {
		d := &Document{Version: Version, Algorithm: Algorithm, Broker: Broker{URL: tt.url}}
		err := d.CheckBrokerFor(tt.tee)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s on %s: %v", tt.url, tt.tee, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "veil-dev") {
			t.Errorf("%s on %s = %v, want %q", tt.url, tt.tee, err, tt.want)
		}
	}
}
