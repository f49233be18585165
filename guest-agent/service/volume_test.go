package service

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/guest-agent/api"
)

func TestVolumeServiceOverTTRPC(t *testing.T) {
	fx := serve(t)
	ctx := context.Background()
	v := fx.client.Volume

	if _, err := v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "..1/token", Data: []byte("s3cret"), Mode: 0o2640}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "token", Kind: api.CopyFileRequest_SYMLINK, LinkTarget: "..1/token"}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(fx.volumes, "secret-1", "token")
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "s3cret" {
		t.Fatalf("copied file reads %q, %v", b, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("mode %v, %v; want setgid 0640", fi.Mode(), err)
	}

	_, err = v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "../../escape", Data: []byte("x")})
	wantCode(t, "copy to ../../escape", err, codes.InvalidArgument)
	_, err = v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "l", Kind: api.CopyFileRequest_SYMLINK, LinkTarget: "/etc/shadow"})
	wantCode(t, "symlink to /etc/shadow", err, codes.InvalidArgument)
	_, err = v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "dev", Mode: 0o20644})
	wantCode(t, "a character-device mode", err, codes.InvalidArgument)
	_, err = v.CopyFile(ctx, &api.CopyFileRequest{Volume: "secret-1", Path: "x", Kind: api.CopyFileRequest_Kind(9)})
	wantCode(t, "unknown kind", err, codes.InvalidArgument)
	if _, err := os.Stat(filepath.Join(fx.volumes, "escape")); !os.IsNotExist(err) {
		t.Errorf("a refused copy wrote outside the volume: %v", err)
	}

	if _, err := v.RemovePath(ctx, &api.RemovePathRequest{Volume: "secret-1", Path: "..1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(fx.volumes, "secret-1", "..1")); !os.IsNotExist(err) {
		t.Errorf("removed directory still there: %v", err)
	}
	_, err = v.RemovePath(ctx, &api.RemovePathRequest{Volume: "secret-1", Path: "/"})
	wantCode(t, "remove /", err, codes.InvalidArgument)
}
