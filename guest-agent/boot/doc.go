// Package boot does the guest agent's PID 1 duties: it first leaves the
// initramfs for a tmpfs root (not needed when / is a read-only root image,
// which gets a tmpfs /etc instead) and drops the environment the kernel passed
// from the host's command line (CleanStart: switch root, re-exec with PATH
// only), then reads the kernel command line, mounts the kernel filesystems (proc, sys, devtmpfs, devpts,
// shm, cgroup2, tmp, run), enables cgroup controllers for containers (the
// kernel has everything built in: there are no modules), opens the console for logging, sets
// the hostname and resolv.conf, and syncs, unmounts and powers the VM off.
// Decisions (parsing, the mount table, option strings) are pure functions;
// the rest are thin wrappers over system calls that only work as PID 1 in
// the guest.
package boot
