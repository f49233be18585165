// Package harness owns the end-to-end tier's environment: a private
// containerd (the pinned build in .cache/bin, its own root, state, sockets
// and config under one temporary directory) running in a network namespace
// the harness creates, an in-memory OCI registry inside that namespace
// holding the project's test images, CNI from Debian's plugins, and the
// runtime handlers runc and veil. It runs crictl, ctr and critest against
// that containerd, and on Close removes every process, mount, namespace,
// cgroup and directory the environment made. See tools/e2e/README.md.
package harness
