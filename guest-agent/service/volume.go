package service

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// volumeAPI serves the Volume service: path-confined copies into the
// guest's volume directories (see guest-agent/volume).
type volumeAPI struct{ s *Service }

var _ api.VolumeService = (*volumeAPI)(nil)

// volumes returns the pod's Volumes with the caps of the accepted
// init-data's [volumes] table (defaults before it and for ordinary pods;
// a confidential agent serves no copy before init-data is accepted).
func (a *volumeAPI) volumes() (*volume.Volumes, error) {
	v := a.s.cfg.Volumes
	if v == nil {
		return nil, fmt.Errorf("volume copies: %w", errdefs.ErrNotImplemented)
	}
	if st := a.s.cfg.Attest; st != nil {
		v.SetLimits(volumeLimits(st.VolumeLimits()))
	}
	return v, nil
}

// volumeLimits are the Volume service's caps from the init-data's
// [volumes] table (zero: the default).
func volumeLimits(l initdata.VolumeLimits) volume.Limits {
	return volume.Limits{
		VolumeBytes:   l.MaxVolumeBytes,
		VolumeEntries: l.MaxVolumeEntries,
		TotalBytes:    l.MaxTotalBytes,
		TotalEntries:  l.MaxTotalEntries,
	}
}

func (a *volumeAPI) CopyFile(ctx context.Context, req *api.CopyFileRequest) (*emptypb.Empty, error) {
	v, err := a.volumes()
	if err != nil {
		return nil, rpcErr(err)
	}
	e := volume.Entry{
		Path:   req.GetPath(),
		Data:   req.GetData(),
		Target: req.GetLinkTarget(),
		Mode:   unixMode(req.GetMode()),
		UID:    int(req.GetUid()),
		GID:    int(req.GetGid()),
	}
	switch req.GetKind() {
	case api.CopyFileRequest_FILE:
		e.Kind = volume.File
	case api.CopyFileRequest_DIR:
		e.Kind = volume.Dir
	case api.CopyFileRequest_SYMLINK:
		e.Kind = volume.Symlink
	default:
		return nil, rpcErr(fmt.Errorf("copy kind %v: %w", req.GetKind(), errdefs.ErrInvalidArgument))
	}
	if err := v.Put(req.GetVolume(), e); err != nil {
		return nil, rpcErr(err)
	}
	a.s.cfg.Log.Debug("volume entry written", "volume", req.GetVolume(), "path", req.GetPath(), "kind", e.Kind, "bytes", len(e.Data))
	return &emptypb.Empty{}, nil
}

func (a *volumeAPI) RemovePath(ctx context.Context, req *api.RemovePathRequest) (*emptypb.Empty, error) {
	v, err := a.volumes()
	if err != nil {
		return nil, rpcErr(err)
	}
	return &emptypb.Empty{}, rpcErr(v.Remove(req.GetVolume(), req.GetPath()))
}

// unixMode turns st_mode permission bits (as stat(2) and chmod(2) give
// them: 0o4000 setuid, 0o2000 setgid, 0o1000 sticky) into an fs.FileMode.
// Anything above the permission bits is kept as an unknown type bit so
// that the volume package refuses it.
func unixMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	if m&^0o7777 != 0 {
		mode |= fs.ModeIrregular
	}
	return mode
}
