package policy

import "testing"

func TestOutputReadable(t *testing.T) {
	readable := Default()
	readable.AllowReadOutput = true
	for _, tc := range []struct {
		name string
		e    func() *Enforcer
		want bool
	}{
		{"ordinary pod", func() *Enforcer { return NewEnforcer(false) }, true},
		{"confidential, before init-data", func() *Enforcer { return NewEnforcer(true) }, false},
		{"confidential, default policy", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(Default())
			return e
		}, false},
		{"confidential, allow_read_output", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(readable)
			return e
		}, true},
		{"confidential, allow_read_output, locked down", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(readable)
			e.Lock("test")
			return e
		}, false},
	} {
		if got := tc.e().OutputReadable(); got != tc.want {
			t.Errorf("%s: OutputReadable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
