package install

import (
	"testing"

	"github.com/veil-runtime/veil/shim/config"
)

// Every handler's rendered config is a valid shim config with its TEE.
func TestHandlerConfigsParse(t *testing.T) {
	want := map[string]string{"veil": "none", "veil-dev": "sample", "veil-snp": "snp", "veil-tdx": "tdx"}
	for _, h := range Handlers {
		cfg, err := config.Parse(HandlerConfig("/opt/veil", h), h+".toml")
		if err != nil {
			t.Fatalf("%s: %v", h, err)
		}
		if got := string(cfg.Confidential.Kind()); got != want[h] {
			t.Errorf("%s: tee %q, want %q", h, got, want[h])
		}
		if cfg.IsConfidential() != (h != "veil") {
			t.Errorf("%s: confidential %v", h, cfg.IsConfidential())
		}
	}
}
