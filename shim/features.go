package shim

import (
	"slices"

	_ "github.com/containerd/containerd/v2/core/runtime" // registers features.Features with typeurl
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// RuntimeFeatures returns veil's OCI runtime-spec features document, which
// the shim's -info answers with (RuntimeInfo.Features). containerd's CRI
// derives the runtime handler's features from it: recursive read-only
// mounts when MountOptions has "rro", user namespaces when Linux.Namespaces
// has "user" and Linux.MountExtensions.IDMap is enabled. runc's shim
// answers with `runc features`; a veil container is run by the guest's OCI
// runtime (crun, runc when the image has no crun) behind the agent, with
// hooks run by the shim on the host (hooks.go), so the document is veil's
// own: what a spec handed to veil really gets.
//
//   - MountOptions: the options both guest runtimes apply (crun 1.8.1 and
//     runc 1.1.5, the Debian bookworm packages the guest image copies;
//     crun 1.8.1 has no `features` command). Bind mounts reach the guest
//     over the pod's 9p share (mounts.go); the mounts below a host source
//     are shared as binds of their own, writable under "ro", read-only
//     under "rro", which is read-only on the host too.
//     Not listed: "idmap"/"ridmap" (crun 1.8.1 has no idmapped bind
//     mounts, and 9p in the guest cannot idmap), "nosymfollow" and its
//     kin (not in crun 1.8.1), "acl"/"noacl".
//   - Hooks: the four the shim runs on the host. createContainer and
//     startContainer are refused (hooks.go).
//   - Linux.MountExtensions.IDMap is disabled, so containerd reports no CRI
//     user-namespace support: the "user" namespace works in the guest, but
//     the CRI's user namespaces need idmapped mounts.
//   - Cgroup: v2 only (the guest mounts the unified hierarchy), no systemd
//     (the guest has none).
//
// GuestRuntimeVersions names the runtime versions this was checked against;
// tools/guest-image's VM-tier test fails when the image would copy others
// (so a new crun or runc gets its features looked at again) and when `runc
// features` of the runc it copies lacks a mount option or hook claimed here.
func RuntimeFeatures() *features.Features {
	yes, no := true, false
	return &features.Features{
		OCIVersionMin: "1.0.0",
		OCIVersionMax: "1.0.2",
		Hooks:         []string{"prestart", "createRuntime", "poststart", "poststop"},
		MountOptions:  slices.Clone(mountOptions),
		Linux: &features.Linux{
			Namespaces: []string{"cgroup", "ipc", "mount", "network", "pid", "user", "uts"},
			Cgroup:     &features.Cgroup{V1: &no, V2: &yes, Systemd: &no, SystemdUser: &no},
			Seccomp:    &features.Seccomp{Enabled: &yes},
			Apparmor:   &features.Apparmor{Enabled: &no},
			Selinux:    &features.Selinux{Enabled: &no},
			IntelRdt:   &features.IntelRdt{Enabled: &no},
			MountExtensions: &features.MountExtensions{
				IDMap: &features.IDMap{Enabled: &no},
			},
		},
		Annotations: map[string]string{
			"io.github.veil-runtime.guest-runtimes": "crun " + GuestRuntimeVersions["crun"] + ", runc " + GuestRuntimeVersions["runc"],
		},
	}
}

// GuestRuntimeVersions are the guest OCI runtimes RuntimeFeatures describes:
// Debian package name to version, as in the guest image's manifest.
var GuestRuntimeVersions = map[string]string{"crun": "1.8.1-1+deb12u1", "runc": "1.1.5+ds1-1+deb12u1"}

// mountOptions are the OCI mount options a veil container's spec may use
// (see RuntimeFeatures).
var mountOptions = []string{
	"async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec",
	"iversion", "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime",
	"noexec", "noiversion", "nolazytime", "nomand", "norelatime", "nostrictatime",
	"nosuid", "private", "ratime", "rbind", "rdev", "rdiratime", "relatime",
	"remount", "rexec", "rnoatime", "rnodev", "rnodiratime", "rnoexec",
	"rnorelatime", "rnostrictatime", "rnosuid", "ro", "rprivate", "rrelatime",
	"rro", "rrw", "rshared", "rslave", "rstrictatime", "rsuid", "runbindable",
	"rw", "shared", "silent", "slave", "strictatime", "suid", "sync",
	"tmpcopyup", "unbindable",
}
