// Package runtimeclass holds veil's Kubernetes manifests (kustomize-ready:
// kubectl apply -k runtimeclass/): the RuntimeClasses veil, veil-dev,
// veil-snp and veil-tdx, the installer DaemonSet with its service account
// and RBAC (base/), the uninstall overlay (uninstall/) and an example pod per
// handler (examples/). Its test decodes every manifest strictly with the
// k8s.io/api types and checks them against the installer's handler names and
// node labels.
//
// The node installer itself is in the subpackages: install (files,
// containerd drop-in, restart, labels, uninstall), containerdcfg (pure
// containerd config decisions) and hostcheck (`veil check`).
package runtimeclass
