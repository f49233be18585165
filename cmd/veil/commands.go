package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/veil-runtime/veil/cmd/internal/cli"
)

// command runs one subcommand with its arguments.
type command struct {
	run   func(args []string, stdout io.Writer) error
	usage string
}

// commands maps subcommand names to their implementations. Add new
// subcommands here, one file each.
var commands = map[string]command{
	"initdata":  {run: initdataCmd, usage: "build, print, digest and check init-data documents"},
	"check":     {run: checkCmd, usage: "report what this host can run veil with (--json)"},
	"install":   {run: installCmd, usage: "install veil on this node: files, containerd handlers, restart, node labels"},
	"uninstall": {run: uninstallCmd, usage: "remove what install added; containerd's config gets its original bytes back"},
	"debug":     {run: debugCmd, usage: "debug console SANDBOX: a root shell inside the pod's VM"},
	"image":     {run: imageCmd, usage: "encrypt (ocicrypt), sign (cosign format) and keygen for images the guest pulls"},
	"policy":    {run: policyCmd, usage: "generate the init-data that binds a pod's spec from its manifest; check a container spec against it"},
	"measure":   {run: measureCmd, usage: "compute the launch measurement (SNP digest, TDX MRTD/RTMRs) and init-data digest of a handler's pod VM"},
	"metrics":   {run: metricsCmd, usage: "scrape every pod's shim metrics: Prometheus text, a table (--format table) or an HTTP exporter (--listen)"},
	"version":   {run: versionCmd, usage: "print the commit veil was built from and the guest image's digest (also --version)"},
}

func versionCmd(args []string, stdout io.Writer) error {
	if len(args) != 0 {
		return fmt.Errorf("version takes no arguments, got %q", args)
	}
	cli.PrintVersion(stdout, "veil", true)
	return nil
}

func run(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(os.Stdout, usage())
		if len(args) == 0 {
			return errors.New("no command")
		}
		return nil
	}
	if cli.IsVersion(args[0]) {
		return versionCmd(args[1:], os.Stdout)
	}
	c, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q\n%s", args[0], usage())
	}
	return c.run(args[1:], os.Stdout)
}

func usage() string {
	var b strings.Builder
	b.WriteString("usage: veil COMMAND [ARGS]\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, commands[n].usage)
	}
	return b.String()
}
