package shim

import "testing"

func TestGroupID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ann  map[string]string
		want string
	}{
		{"no annotations: own pod", "c1", nil, "c1"},
		{"cri sandbox", "sb", map[string]string{annotationContainerType: "sandbox", annotationSandboxID: "sb"}, "sb"},
		{"cri container joins its sandbox", "c1", map[string]string{annotationContainerType: "container", annotationSandboxID: "sb"}, "sb"},
		{"sandbox-id without type joins", "c1", map[string]string{annotationSandboxID: "sb"}, "sb"},
		{"sandbox ignores a foreign sandbox-id", "sb2", map[string]string{annotationContainerType: "sandbox", annotationSandboxID: "other"}, "sb2"},
		{"empty sandbox-id: own pod", "c1", map[string]string{annotationSandboxID: ""}, "c1"},
		{"unrelated annotations", "c1", map[string]string{"io.containerd.runc.v2.group": "g"}, "c1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := groupID(tc.id, tc.ann); got != tc.want {
				t.Errorf("groupID(%q, %v) = %q, want %q", tc.id, tc.ann, got, tc.want)
			}
		})
	}
}
