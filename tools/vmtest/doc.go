// Package vmtest is veil's VM test tier: real QEMU VMs booted from the real
// guest image (build/guest, `make guest-image`) with the real agent, driven
// through hypervisor/qemu and the agent API exactly as the shim drives them.
// No fakes.
//
// The tests carry the build tag vm and read the guest image directory from
// VEIL_GUEST_DIR:
//
//	make test-vm
//	VEIL_GUEST_DIR=build/guest go test -tags vm -v -run TestFigures ./tools/vmtest
//
// One VM, booted in TestMain, serves the tests that can share it (containers,
// exec, signals, stdio); the tests that end VMs (killing QEMU, ten boots in a
// row) boot their own. TestFigures logs the numbers a release note quotes:
// image size, QEMU start to agent ready, QEMU's resident memory.
// TestHostileHost is the hostile host: a veil-dev guest whose init-data
// binds one container gets each attack through the real agent API and
// refuses it naming the rule, while the bound container runs.
package vmtest
