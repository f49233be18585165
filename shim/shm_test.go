package shim

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A veil pod's /dev/shm is a guest tmpfs the size of the CRI's host tmpfs,
// and the containers bind it instead of sharing the host's over 9p; a
// hostIPC pod's (the host's /dev/shm) stays a host path.
func TestGuestShm(t *testing.T) {
	shm := t.TempDir()
	if err := unix.Mount("shm", shm, "tmpfs", 0, "size=3m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(shm, unix.MNT_DETACH) })
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/cri/hosts", Options: []string{"rbind"}},
		{Destination: "/dev/shm", Type: "bind", Source: shm, Options: []string{"rbind", "rw"}},
	}}
	st, err := shmStorage(spec)
	if err != nil {
		t.Fatal(err)
	}
	if st == nil || st.Driver != "tmpfs" || st.MountPoint != guestShmDir || st.Options[len(st.Options)-1] != "size=3145728" {
		t.Fatalf("shm storage = %+v, want a tmpfs at %s with size=3145728", st, guestShmDir)
	}
	gspec, binds := guestSpec("c1", spec, nil)
	binds = useGuestShm(gspec, binds)
	if len(binds) != 1 || binds[0].Source != "/var/lib/cri/hosts" {
		t.Errorf("host binds left: %+v, want only /etc/hosts", binds)
	}
	if m := gspec.Mounts[1]; m.Destination != "/dev/shm" || m.Source != guestShmDir {
		t.Errorf("guest /dev/shm mount = %+v, want a bind of %s", m, guestShmDir)
	}

	hostIPC := &specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/shm", Type: "bind", Source: "/dev/shm", Options: []string{"rbind"}}}}
	if st, err := shmStorage(hostIPC); st != nil || err != nil {
		t.Errorf("host IPC pod: shm storage %+v, %v; want none", st, err)
	}
	gspec, binds = guestSpec("c1", hostIPC, nil)
	if binds = useGuestShm(gspec, binds); len(binds) != 1 {
		t.Errorf("host IPC pod: the host's /dev/shm bind was dropped")
	}
	// ctr run: a tmpfs in the spec, made by runc in the guest.
	if st, err := shmStorage(&specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/shm", Type: "tmpfs", Source: "shm"}}}); st != nil || err != nil {
		t.Errorf("tmpfs /dev/shm: shm storage %+v, %v; want none", st, err)
	}
}
