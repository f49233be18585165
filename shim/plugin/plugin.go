// Package plugin registers veil's task service with containerd's shim
// library, and links the hypervisor drivers the handler's config can name
// (hypervisor.driver): the QEMU driver, which registers itself with
// hypervisor.Drivers. The shim's main imports it for that side effect.
package plugin

import (
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"

	_ "github.com/veil-runtime/veil/hypervisor/qemu" // registers the "qemu" driver
	veilshim "github.com/veil-runtime/veil/shim"
)

func init() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return veilshim.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service), veilshim.Options{})
		},
	})
}
