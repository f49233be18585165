// Package agent is veil-agent, the guest agent that runs as PID 1 inside a
// pod's VM. Run wires the parts together:
//
//   - boot/: PID 1 duties — move out of the initramfs into a tmpfs root
//     and re-execute with a clean environment (so runc can pivot_root and
//     nothing from the kernel command line reaches runc); mount proc, sys, devtmpfs, devpts (newinstance,
//     /dev/ptmx), /dev/shm, cgroup2 (controllers delegated), /tmp, /run (the
//     kernel has everything built in: no modules to load); log to /dev/console at the level of
//     veil.log=debug|info|warn|error on the kernel command line; power off
//     on Shutdown and on any fatal error (PID 1 must never exit).
//   - reaper/: one wait4(-1) loop reaps every child and is go-runc's
//     ProcessMonitor, so runc's own exit statuses are not stolen.
//   - transport/: the ttrpc API is served on the virtio-serial port
//     "veil.agent" (reopened after each host disconnect) and on vsock port
//     1024 when /dev/vsock exists; GuestDetails reports which one.
//   - storage/, containers/: storages are mounted, bundles are written at
//     /run/veil/containers/<id>/ and containers run with the OCI runtime
//     veil.oci_runtime names (crun by default, or runc; its binary sealed
//     in memory at boot) in cgroups /veil/<id>; the shared directory is /run/veil/shared; specs
//     are hardened (nosuid,nodev volume binds; more for confidential pods).
//   - service/: the Sandbox, Container and Process services of api/;
//     CreateSandbox writes the pod's namespaced sysctls in the guest.
//
// With CreateSandbox's sandbox_pidns the agent starts a holder of the
// pod's shared PID namespace: itself, re-executed as "veil-agent pause",
// PID 1 of a new PID namespace that only reaps and sleeps.
package agent
