// Package e2e is the end-to-end tier: tests (build tag e2e) that drive a
// private containerd with ctr, crictl and critest under each CRI runtime
// handler, runc and veil, from the same code. tools/e2e/harness starts the
// environment; tools/e2e/testimages builds the images; README.md says how to
// run one scenario by hand and where the logs go.
package e2e
