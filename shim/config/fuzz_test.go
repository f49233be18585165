package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// FuzzParse: the shim's TOML config never panics the parser; what it
// accepts survives a marshal and parse round trip unchanged; and an
// unknown key, at the top or in any table, is always an error that names
// the key in full.
func FuzzParse(f *testing.F) {
	f.Add([]byte("debug = true\n[hypervisor]\nvcpus = 2\nmax_vcpus = 4\nmemory_mib = 512\naccel = \"tcg\"\nkernel_args = [\"quiet\"]\n[agent]\ncall_timeout = \"5s\"\n"), uint8(0), "debgu")
	f.Add([]byte("[confidential]\ntee = \"sample\"\nguest_pull = true\nsnp_policy = 0x30000\n"), uint8(3), "te")
	f.Add([]byte("[hypervisor\n"), uint8(1), "vcpu")
	f.Add([]byte("[agent]\nboot_timeout = \"1h\"\n[agent]\n"), uint8(2), "timeout")
	f.Add([]byte("debug = 1\n"), uint8(1), "a.b")
	f.Add([]byte("[[hypervisor]]\n"), uint8(0), "")
	tables := []string{"", "hypervisor", "agent", "confidential"}
	f.Fuzz(func(t *testing.T, doc []byte, table uint8, key string) {
		if cfg, err := Parse(doc, "fuzz.toml"); err == nil {
			out, err := toml.Marshal(cfg)
			if err == nil {
				again, err := Parse(out, "again.toml")
				if err != nil {
					t.Fatalf("accepted %q, but not its re-encoding %q: %v", doc, out, err)
				}
				// Compared encoded: nil and empty lists are the same config.
				if out2, err := toml.Marshal(again); err != nil || !bytes.Equal(out, out2) {
					t.Fatalf("round trip changed the config:\n%s\n%s (%v)", out, out2, err)
				}
			}
		}

		// A bare key no field has (no field starts with x_).
		var b strings.Builder
		b.WriteString("x_")
		for _, r := range key {
			if b.Len() >= 24 {
				break
			}
			if r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				b.WriteRune(r)
			}
		}
		name, unknown := b.String(), b.String()+" = 1\n"
		if tb := tables[int(table)%len(tables)]; tb != "" {
			name, unknown = tb+"."+name, "["+tb+"]\n"+unknown
		}
		_, err := Parse([]byte(unknown), "fuzz.toml")
		if err == nil || !strings.Contains(err.Error(), "unknown key "+name) {
			t.Fatalf("unknown key %s in %q: err = %v, want one naming it", name, unknown, err)
		}
	})
}
