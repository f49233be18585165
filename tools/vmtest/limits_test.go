//go:build vm

package vmtest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
)

// TestVolumeCopyCapsInGuest sends a veil-dev guest the host's volume
// copies past the caps its init-data's [volumes] table sets: the real
// agent refuses the copy that would go over, with ResourceExhausted naming
// the key and its value, and takes copies again once a removal made room.
func TestVolumeCopyCapsInGuest(t *testing.T) {
	doc := []byte(`version = "0.1.0"
algorithm = "sha256"

[volumes]
max_volume_bytes = 4096
max_volume_entries = 16
`)
	ctx := testCtx(t)
	v := bootSample(t, "caps", initdata.Digest(doc))
	if _, err := v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc}); err != nil {
		t.Fatalf("SetInitData: %v\nconsole:\n%s", err, v.console())
	}
	d, err := v.client.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest of 512 MiB: MemTotal %d KiB", d.MemTotalBytes>>10)
	cp := func(path string, kind api.CopyFileRequest_Kind, data []byte) error {
		_, err := v.client.Volume.CopyFile(ctx, &api.CopyFileRequest{Volume: "cm", Path: path, Kind: kind, Data: data, Mode: 0o644})
		return err
	}
	if err := cp("..1/key", api.CopyFileRequest_FILE, bytes.Repeat([]byte("k"), 4000)); err != nil {
		t.Fatalf("copy under the caps: %v", err)
	}
	err = cp("..1/other", api.CopyFileRequest_FILE, make([]byte, 200))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "over the limit volumes.max_volume_bytes = 4096 bytes: volume cm holds 4000, this adds 200") {
		t.Fatalf("copy over max_volume_bytes: %v", err)
	}
	for i := range 14 { // ..1 and ..1/key are two entries
		if err := cp(fmt.Sprintf("d%d", i), api.CopyFileRequest_DIR, nil); err != nil {
			t.Fatalf("directory %d: %v", i, err)
		}
	}
	err = cp("d14", api.CopyFileRequest_DIR, nil)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "over the limit volumes.max_volume_entries = 16 entries") {
		t.Fatalf("copy over max_volume_entries: %v", err)
	}
	if _, err := v.client.Volume.RemovePath(ctx, &api.RemovePathRequest{Volume: "cm", Path: "..1"}); err != nil {
		t.Fatal(err)
	}
	if err := cp("..2/key", api.CopyFileRequest_FILE, make([]byte, 200)); err != nil {
		t.Errorf("copy after the removal made room: %v", err)
	}
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
}
