package shim

// CRI annotations the shim reads from a container's OCI spec.
const (
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationCPUQuota      = "io.kubernetes.cri.sandbox-cpu-quota"
	annotationCPUPeriod     = "io.kubernetes.cri.sandbox-cpu-period"
	annotationMemory        = "io.kubernetes.cri.sandbox-memory"

	containerTypeSandbox = "sandbox"
)

// groupID names the shim (and VM) a container belongs to: its pod's sandbox
// ID when the CRI annotated one, else the container's own ID (a container
// started with ctr is a pod of its own). A sandbox container is always its own
// group, whatever its sandbox-id annotation says.
func groupID(id string, annotations map[string]string) string {
	if annotations[annotationContainerType] == containerTypeSandbox {
		return id
	}
	if sb := annotations[annotationSandboxID]; sb != "" {
		return sb
	}
	return id
}

// isSandbox reports whether the container is a CRI pod sandbox (pause)
// container, whose process the shim fakes.
func isSandbox(annotations map[string]string) bool {
	return annotations[annotationContainerType] == containerTypeSandbox
}
