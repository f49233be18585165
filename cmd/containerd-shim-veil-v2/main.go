// Command containerd-shim-veil-v2 is veil's containerd shim
// (io.containerd.veil.v2): one process per pod, running the pod's containers
// in a VM. See shim/README.md.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"

	veilshim "github.com/veil-runtime/veil/shim"
	_ "github.com/veil-runtime/veil/shim/plugin"
)

func main() {
	shim.RunShim(context.Background(), veilshim.NewManager(veilshim.RuntimeName, ""), veilshim.BinaryOpts)
}
