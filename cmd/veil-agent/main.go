// Command veil-agent is the guest agent: PID 1 in a veil pod VM. See
// package github.com/veil-runtime/veil/guest-agent.
package main

import (
	"fmt"
	"os"

	"github.com/veil-runtime/veil/cmd/internal/cli"
	agent "github.com/veil-runtime/veil/guest-agent"
)

// version is set at build time with -ldflags "-X main.version=..."; the
// commit (cli.Commit) otherwise.
var version = ""

func main() {
	cli.Exit("veil-agent", run())
}

// usage is what --help prints outside a VM.
const usage = `veil-agent is the guest agent: PID 1 in a veil pod VM, started by the
guest kernel, never by hand. Outside a VM (not PID 1) it answers only:
  veil-agent --version   the commit it was built from
  veil-agent --help      this text
`

func run() error {
	// As PID 1 the arguments are the kernel's to give; elsewhere only the
	// two questions a person may ask.
	if os.Getpid() != 1 && len(os.Args) == 2 {
		switch {
		case cli.IsVersion(os.Args[1]):
			cli.PrintVersion(os.Stdout, "veil-agent", false)
			return nil
		case cli.IsHelp(os.Args[1]):
			fmt.Print(usage)
			return nil
		}
	}
	if agent.IsPauseHolder(os.Args) {
		return agent.Pause()
	}
	v := version
	if v == "" {
		v = cli.Commit()
	}
	return agent.Run(agent.Options{Version: v})
}
