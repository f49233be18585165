package boot

import (
	"strings"
	"testing"
)

func TestOCIRuntime(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		want   string
		err    string
	}{
		{nil, "crun", ""},
		{map[string]string{OCIRuntimeParam: ""}, "crun", ""},
		{map[string]string{OCIRuntimeParam: "runc"}, "runc", ""},
		{map[string]string{OCIRuntimeParam: "crun"}, "crun", ""},
		{map[string]string{OCIRuntimeParam: "/bin/sh"}, "crun", `veil.oci_runtime="/bin/sh": use crun or runc`},
		{map[string]string{OCIRuntimeParam: "youki"}, "crun", `veil.oci_runtime="youki"`},
	} {
		got, err := OCIRuntime(tc.params)
		if got.Name != tc.want || got.Binary != "/usr/bin/"+tc.want {
			t.Errorf("OCIRuntime(%v) = %+v, want %s at /usr/bin/%s", tc.params, got, tc.want, tc.want)
		}
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("OCIRuntime(%v) error %v, want %q", tc.params, err, tc.err)
		}
	}
	if OCIRuntimes[Crun].SpecVersion == "" || !strings.HasPrefix(OCIRuntimes[Crun].SpecVersion, "1.0.") {
		t.Errorf("crun 1.8 needs an ociVersion of 1.0.x, have %q", OCIRuntimes[Crun].SpecVersion)
	}
	if OCIRuntimes[Runc].SpecVersion != "" {
		t.Errorf("runc takes the host's ociVersion, have an override %q", OCIRuntimes[Runc].SpecVersion)
	}
	for v, want := range map[string]bool{"": false, "1": true, "true": true, "0": false, "yes": false} {
		if got := OCIRuntimeClones(map[string]string{OCIRuntimeCloneParam: v}); got != want {
			t.Errorf("OCIRuntimeClones(%q) = %v, want %v", v, got, want)
		}
	}
}
