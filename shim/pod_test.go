package shim

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
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
		// nerdctl sets net.ipv4.ip_unprivileged_port_start on every container.
		{"a container's own pod (ctr, nerdctl): its net.* ones, the VM's", &specs.Spec{Annotations: container, Linux: &specs.Linux{Sysctl: sysctls}}, false,
			map[string]string{"net.ipv4.ping_group_range": "0 2147483647"}},
		{"a container's own pod without net.* sysctls: none", &specs.Spec{Linux: &specs.Linux{Sysctl: map[string]string{"kernel.msgmax": "1"}}}, false, nil},
		{"a container's own confidential pod: none", &specs.Spec{Linux: &specs.Linux{Sysctl: sysctls}}, true, nil},
		{"no linux section", &specs.Spec{Annotations: sandbox}, false, nil},
	} {
		if got := podSysctls(tc.spec, tc.confidential); !maps.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
			t.Errorf("%s: podSysctls = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Regression (issue 15, nerdctl under veil: "crun: the sysctl
// net.ipv4.ip_unprivileged_port_start requires a new network namespace"):
// a container's net.* sysctls are the pod VM's, which it shares; those the
// pod set pass (and guestSpec drops them), any other is refused by name.
func TestCheckNetSysctls(t *testing.T) {
	podSet := map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"}
	spec := func(s map[string]string) *specs.Spec { return &specs.Spec{Linux: &specs.Linux{Sysctl: s}} }
	for _, tc := range []struct {
		name         string
		spec         *specs.Spec
		pod          map[string]string
		confidential bool
		want         string // "" for no error, else a part of it
	}{
		{"set by the pod", spec(podSet), podSet, false, ""},
		{"no sysctls", spec(nil), nil, false, ""},
		{"no linux section", &specs.Spec{}, nil, false, ""},
		{"not a net sysctl: the container's own IPC namespace", spec(map[string]string{"kernel.shmmax": "1"}), nil, false, ""},
		{"not set by the pod", spec(map[string]string{"net.core.somaxconn": "1024"}), podSet, false,
			`sysctl net.core.somaxconn="1024": the pod did not set it`},
		{"slash form, not set by the pod", spec(map[string]string{"net/core/somaxconn": "1024"}), podSet, false,
			`sysctl net/core/somaxconn="1024": the pod did not set it`},
		{"another value", spec(map[string]string{"net.ipv4.ip_unprivileged_port_start": "1024"}), podSet, false,
			`sysctl net.ipv4.ip_unprivileged_port_start="1024": the pod set it to "0"`},
		{"confidential", spec(podSet), nil, true, "a confidential pod sets no sysctls"},
	} {
		err := checkNetSysctls("c1", tc.spec, tc.pod, tc.confidential)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), "container c1: ") || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		case tc.want != "" && !errors.Is(err, errdefs.ErrInvalidArgument):
			t.Errorf("%s: %v is not InvalidArgument", tc.name, err)
		}
	}
}
