// Command veil is the node and operator CLI: check, install, uninstall, metrics,
// measure, initdata, policy, image encrypt. Each subcommand lives in its own file
// and registers in commands.
package main

import (
	"os"

	"github.com/veil-runtime/veil/cmd/internal/cli"
)

func main() {
	cli.Exit("veil", run(os.Args[1:]))
}
