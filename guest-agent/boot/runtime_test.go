package boot

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOCIRuntime(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		want   string
		err    string
	}{
		{nil, "crun", ""},
		{map[string]string{OCIRuntimeParam: ""}, "crun", ""},
		{map[string]string{OCIRuntimeParam: "runc"}, "runc", ""},
		{map[string]string{OCIRuntimeParam: "crun"}, "crun", ""},
		{map[string]string{OCIRuntimeParam: "/bin/sh"}, "crun", `veil.oci_runtime="/bin/sh": use crun or runc`},
		{map[string]string{OCIRuntimeParam: "youki"}, "crun", `veil.oci_runtime="youki"`},
	} {
		got, err := OCIRuntime(tc.params)
		if got.Name != tc.want || got.Binary != "/usr/bin/"+tc.want {
			t.Errorf("OCIRuntime(%v) = %+v, want %s at /usr/bin/%s", tc.params, got, tc.want, tc.want)
		}
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("OCIRuntime(%v) error %v, want %q", tc.params, err, tc.err)
		}
	}
	if OCIRuntimes[Crun].SpecVersion == "" || !strings.HasPrefix(OCIRuntimes[Crun].SpecVersion, "1.0.") {
		t.Errorf("crun 1.8 needs an ociVersion of 1.0.x, have %q", OCIRuntimes[Crun].SpecVersion)
	}
	if OCIRuntimes[Runc].SpecVersion != "" {
		t.Errorf("runc takes the host's ociVersion, have an override %q", OCIRuntimes[Runc].SpecVersion)
	}
	for v, want := range map[string]bool{"": false, "1": true, "true": true, "0": false, "yes": false} {
		if got := OCIRuntimeClones(map[string]string{OCIRuntimeCloneParam: v}); got != want {
			t.Errorf("OCIRuntimeClones(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestSealBinary needs root (it bind-mounts): the file then reads the same,
// carries exactly the seals runc and crun look for, refuses writes, and
// the original below the mount has been truncated.
func TestSealBinary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestSealBinary needs root: SealBinary bind-mounts")
	}
	path := filepath.Join(t.TempDir(), "runtime")
	content := []byte("#!/bin/sh\necho sealed\n")
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	mem, err := SealBinary(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = unmountSealed(path)
		mem.Close()
	})
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("sealed file reads %q, %v; want %q", got, err, content)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals != runtimeSeals {
		t.Fatalf("seals %#x, %v; want %#x", seals, err, runtimeSeals)
	}
	if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		_, werr := w.Write([]byte("evil"))
		w.Close()
		if werr == nil {
			t.Fatal("wrote to the sealed binary")
		}
	}
	out, err := exec.Command(path).Output()
	if err != nil || string(out) != "sealed\n" {
		t.Fatalf("running the sealed binary: %q, %v", out, err)
	}
	if err := unmountSealed(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Fatalf("the original below the mount: %v, %v; want it truncated to 0", fi, err)
	}
}

// unmountSealed removes SealBinary's mount: the mount is of the memfd's
// /proc magic link, which a path lookup follows, so it is unmounted
// through an O_PATH|O_NOFOLLOW descriptor of the path.
func unmountSealed(path string) error {
	f, err := os.OpenFile(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Unmount(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.MNT_DETACH)
}
