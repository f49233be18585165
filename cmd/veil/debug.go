package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containerd/console"

	guestconsole "github.com/veil-runtime/veil/guest-agent/console"
	"github.com/veil-runtime/veil/shim"
)

func debugCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "console" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprint(stdout, debugUsage)
			return nil
		}
		return fmt.Errorf("debug: want a subcommand\n%s", debugUsage)
	}
	fs := flag.NewFlagSet("debug console", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), debugUsage); fs.PrintDefaults() }
	root := fs.String("root", shim.DefaultStateRoot, "the shims' pod state directory")
	if err := cli.Parse(fs, args[1:]); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("debug console: want one sandbox ID (or a unique prefix, as crictl pods prints it)\n%s", debugUsage)
	}
	sock, id, err := findConsole(*root, fs.Arg(0))
	if err != nil {
		return fmt.Errorf("debug console: %w", err)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return fmt.Errorf("debug console: connecting to %s: %w", sock, err)
	}
	defer conn.Close()
	if c, err := console.ConsoleFromFile(os.Stdin); err == nil {
		if err := c.SetRaw(); err == nil {
			defer func() { _ = c.Reset() }() // leaving: nothing left to tell
		}
	}
	fmt.Fprintf(os.Stderr, "veil: shell in the guest of pod %s; exit or Ctrl-] to leave\r\n", id)
	return guestconsole.Attach(conn, os.Stdin, stdout)
}

const debugUsage = `usage: veil debug console [--root DIR] SANDBOX

Opens a root shell inside the VM of pod SANDBOX (its ID or a unique prefix of
it). The shell runs in the guest's own namespaces: the agent is PID 1, runc
runs the containers (runc --root /run/runc list), and nsenter reaches them.
Leave with exit or Ctrl-].

The pod's handler config must have debug_console = true (the default). A
confidential guest (veil-dev, veil-snp, veil-tdx) serves the port but refuses
each session, printing the denial, unless the agent policy in its init-data
has allow_debug_console = true.
`

// findConsole finds the debug console socket of the pod whose state
// directory (<root>/<namespace>/<id>) matches idOrPrefix.
func findConsole(root, idOrPrefix string) (sock, id string, err error) {
	if idOrPrefix == "" || strings.ContainsAny(idOrPrefix, "/*?[") {
		return "", "", fmt.Errorf("sandbox %q: want an ID or ID prefix", idOrPrefix)
	}
	dirs, _ := filepath.Glob(filepath.Join(root, "*", idOrPrefix+"*"))
	var pods []string
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			pods = append(pods, d)
		}
	}
	// An exact ID wins over longer IDs it prefixes.
	var exact []string
	for _, d := range pods {
		if filepath.Base(d) == idOrPrefix {
			exact = append(exact, d)
		}
	}
	if len(exact) > 0 {
		pods = exact
	}
	sort.Strings(pods)
	switch len(pods) {
	case 0:
		return "", "", fmt.Errorf("no veil pod %q under %s (is it running under a veil handler? see crictl pods)", idOrPrefix, root)
	case 1:
	default:
		var names []string
		for _, d := range pods {
			rel, _ := filepath.Rel(root, d)
			names = append(names, rel)
		}
		return "", "", fmt.Errorf("sandbox %q is ambiguous: %s", idOrPrefix, strings.Join(names, ", "))
	}
	sock = filepath.Join(pods[0], shim.DebugConsoleLink) // -> the driver's socket
	if _, err := os.Stat(sock); errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("pod %s has no debug console: its handler's config sets debug_console = false", filepath.Base(pods[0]))
	} else if err != nil {
		return "", "", err
	}
	return sock, filepath.Base(pods[0]), nil
}
