// Command veil is the node and operator CLI: check, install, uninstall, metrics,
// measure, initdata, policy, image encrypt. Each subcommand lives in its own file
// and registers in commands.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "veil:", err)
		os.Exit(1)
	}
}
