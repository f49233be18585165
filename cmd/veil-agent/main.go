// Command veil-agent is the guest agent: PID 1 in a veil pod VM. See
// package github.com/veil-runtime/veil/guest-agent.
package main

import (
	"fmt"
	"os"

	agent "github.com/veil-runtime/veil/guest-agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "veil-agent:", err)
		os.Exit(1)
	}
}

func run() error {
	if agent.IsPauseHolder(os.Args) {
		return agent.Pause()
	}
	return agent.Run(agent.Options{Version: version})
}
