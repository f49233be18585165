package containers

import (
	"fmt"

	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// Stats returns the container's cgroup v2 metrics as an Any whose type URL
// is io.containerd.cgroups.v2.Metrics, as containerd expects.
func (m *Manager) Stats(id string) (*anypb.Any, error) {
	if _, err := m.get(id); err != nil {
		return nil, err
	}
	cg, err := cgroup2.Load(CgroupPath(id), cgroup2.WithMountpoint(m.cfg.CgroupRoot))
	if err != nil {
		return nil, fmt.Errorf("loading cgroup of container %q: %w", id, err)
	}
	metrics, err := cg.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading cgroup stats of container %q: %w", id, err)
	}
	a, err := typeurl.MarshalAnyToProto(metrics)
	if err != nil {
		return nil, fmt.Errorf("encoding stats of container %q: %w", id, err)
	}
	return a, nil
}
