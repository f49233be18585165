// Package shim is veil's containerd shim (runtime io.containerd.veil.v2): the
// shim manager containerd's shim library runs for `start` and `delete`, and
// the task service (containerd.task.v3.Task) that runs every container of one
// Kubernetes pod inside one VM through the guest agent. The VM is run by the
// hypervisor driver the handler's config names (hypervisor.driver, looked
// up in the hypervisor package's registry; QEMU by default).
//
// One shim and one VM per pod: Manager.Start groups containers by the CRI
// sandbox-id annotation (see groupID) and returns the running shim's address
// for every container after the first. The first Create starts the pod VM
// (pod.go); each later Create mounts the container's rootfs and bind mounts
// into the pod's shared directory, which QEMU exports to the guest over 9p,
// and asks the agent to create the container there (create.go, mounts.go).
//
// The CRI sandbox (pause) container is not run in the guest: its process is
// faked by the shim (pause.go). It "runs" from Start until it is killed or the
// VM dies, and its pid is the VM monitor's (QEMU's), so containerd and crictl see the
// pod's VM as the sandbox's process.
//
// Events go through one channel and one forwarder goroutine (events.go), so
// they reach containerd in the order they were sent. See README.md for the
// lifecycle, the state directory layout and the configuration keys.
package shim
