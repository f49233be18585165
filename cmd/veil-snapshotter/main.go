// Command veil-snapshotter is veil's containerd proxy snapshotter: it
// lets the guests of confidential handlers pull their own images by
// telling containerd that image layers already exist (snapshotter/).
//
//	veil-snapshotter [--address /run/veil/snapshotter.sock] [--root /var/lib/veil/snapshotter]
//	veil-snapshotter --version
//
// containerd config:
//
//	[proxy_plugins.veil]
//	  type = "snapshot"
//	  address = "/run/veil/snapshotter.sock"
//
// and snapshotter = "veil" on the confidential runtime handlers. See
// shim/README.md, "Guest pull".
package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/veil-runtime/veil/snapshotter"
)

func main() {
	cli.Exit("veil-snapshotter", run(os.Args[1:]))
}

func run(args []string) error {
	fs := flag.NewFlagSet("veil-snapshotter", flag.ContinueOnError)
	address := fs.String("address", "/run/veil/snapshotter.sock", "unix socket containerd's proxy plugin dials")
	root := fs.String("root", "/var/lib/veil/snapshotter", "state directory (snapshot metadata and directories)")
	version := fs.Bool("version", false, "print the commit and the guest image digest, and exit")
	if len(args) == 1 && cli.IsVersion(args[0]) {
		*version, args = true, nil
	}
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *version {
		cli.PrintVersion(os.Stdout, "veil-snapshotter", true)
		return nil
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	sn, err := snapshotter.New(*root, log)
	if err != nil {
		return err
	}
	defer sn.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("serving", "address", *address, "root", *root)
	return snapshotter.Serve(ctx, sn, *address)
}
