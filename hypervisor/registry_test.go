package hypervisor

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestRegistry(t *testing.T) {
	var r Registry
	if _, err := r.Lookup("qemu"); err == nil || !strings.Contains(err.Error(), "no driver is built") {
		t.Errorf("empty registry: Lookup error %v, want one saying no driver is built in", err)
	}
	newVM := func(Config, *slog.Logger) (Hypervisor, error) { return nil, nil }
	r.Register("qemu", newVM)
	r.Register("cloud-hypervisor", newVM)
	if got := r.Names(); !slices.Equal(got, []string{"cloud-hypervisor", "qemu"}) {
		t.Errorf("Names() = %v", got)
	}
	if c, err := r.Lookup("qemu"); err != nil || c == nil {
		t.Errorf("Lookup(qemu) = %v, %v", c, err)
	}
	_, err := r.Lookup("firecracker")
	if err == nil || !strings.Contains(err.Error(), `"firecracker" is unknown`) || !strings.Contains(err.Error(), "cloud-hypervisor, qemu") {
		t.Errorf("unknown driver: error %v, want it to name the driver and the known ones", err)
	}
	for _, tc := range []struct {
		name  string
		newVM Constructor
	}{{"qemu", newVM}, {"", newVM}, {"x", nil}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q, nil constructor: %v) did not panic", tc.name, tc.newVM == nil)
				}
			}()
			r.Register(tc.name, tc.newVM)
		}()
	}
}
