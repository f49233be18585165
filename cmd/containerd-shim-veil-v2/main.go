// Command containerd-shim-veil-v2 is veil's containerd shim
// (io.containerd.veil.v2): one process per pod, running the pod's containers
// in a VM. See shim/README.md.
package main

import (
	"context"
	"os"

	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/veil-runtime/veil/cmd/internal/cli"
	veilshim "github.com/veil-runtime/veil/shim"
	_ "github.com/veil-runtime/veil/shim/plugin"
)

func main() {
	// The shim library's own -v prints containerd's version, not veil's.
	if len(os.Args) == 2 && cli.IsVersion(os.Args[1]) {
		cli.PrintVersion(os.Stdout, "containerd-shim-veil-v2", true)
		return
	}
	shim.RunShim(context.Background(), veilshim.NewManager(veilshim.RuntimeName, ""), veilshim.BinaryOpts)
}
