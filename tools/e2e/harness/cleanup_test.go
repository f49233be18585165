package harness

import "testing"

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		s, dir string
		want   bool
	}{
		{"/tmp/veil-e2e-1", "/tmp/veil-e2e-1", true},
		{"shim -address /tmp/veil-e2e-1/containerd.sock -id x", "/tmp/veil-e2e-1", true},
		{"shim -address /tmp/veil-e2e-12/containerd.sock", "/tmp/veil-e2e-1", false},
		{"/tmp/veil-e2e-12 /tmp/veil-e2e-1 ", "/tmp/veil-e2e-1", true},
		{"sleep 3600", "/tmp/veil-e2e-1", false},
	} {
		if got := within(tc.s, tc.dir); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.s, tc.dir, got, tc.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/plain`:        "/tmp/plain",
		`/tmp/a\040b`:       "/tmp/a b",
		`/tmp/tab\011x\134`: "/tmp/tab\tx\\",
		`/tmp/trailing\04`:  `/tmp/trailing\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
