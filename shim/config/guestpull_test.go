package config

import (
	"strings"
	"testing"
)

func TestGuestPull(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    bool
		wantErr string
	}{
		{name: "veil: host rootfs", doc: "", want: false},
		{name: "confidential: on by default", doc: "[confidential]\ntee = \"sample\"", want: true},
		{name: "confidential, explicitly on", doc: "[confidential]\ntee = \"sample\"\nguest_pull = true", want: true},
		{name: "confidential, turned off", doc: "[confidential]\ntee = \"sample\"\nguest_pull = false", want: false},
		{name: "veil, explicitly off", doc: "[confidential]\nguest_pull = false", want: false},
		{name: "veil cannot guest pull", doc: "[confidential]\nguest_pull = true", wantErr: "key confidential.guest_pull: set, but confidential.tee is none"},
		{name: "not a bool", doc: "[confidential]\ntee = \"sample\"\nguest_pull = \"yes\"", wantErr: "guest_pull"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc), "h.toml")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Confidential.GuestPullEnabled(); got != tt.want {
				t.Fatalf("GuestPullEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}
