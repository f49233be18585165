package shim

import (
	"maps"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestPodSysctls(t *testing.T) {
	sysctls := map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ping_group_range": "0 2147483647"}
	sandbox := map[string]string{annotationContainerType: containerTypeSandbox}
	container := map[string]string{annotationContainerType: "container"}
	for _, tc := range []struct {
		name         string
		spec         *specs.Spec
		confidential bool
		want         map[string]string
	}{
		{"the CRI sandbox's sysctls", &specs.Spec{Annotations: sandbox, Linux: &specs.Linux{Sysctl: sysctls}}, false, sysctls},
		{"confidential: none", &specs.Spec{Annotations: sandbox, Linux: &specs.Linux{Sysctl: sysctls}}, true, nil},
		{"a container's own (ctr run, its own pod): not the pod's", &specs.Spec{Annotations: container, Linux: &specs.Linux{Sysctl: sysctls}}, false, nil},
		{"no linux section", &specs.Spec{Annotations: sandbox}, false, nil},
	} {
		if got := podSysctls(tc.spec, tc.confidential); !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%s: podSysctls = %v, want %v", tc.name, got, tc.want)
		}
	}
}
