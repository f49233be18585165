// Command veil-snapshotter is veil's containerd proxy snapshotter: it
// lets the guests of confidential handlers pull their own images by
// telling containerd that image layers already exist (snapshotter/).
// The node's sandbox image, which containerd's config pins
// (--containerd-config, read at each pull), and each --native-image are
// prepared natively instead, so every handler can unpack them later.
//
//	veil-snapshotter [--address /run/veil/snapshotter.sock] [--root /var/lib/veil/snapshotter]
//	                 [--containerd-config /etc/containerd/config.toml] [--native-image REF]...
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
	containerdConfig := fs.String("containerd-config", "/etc/containerd/config.toml",
		"containerd's config file (imports followed), read at each pull for the sandbox image, whose layers are prepared natively; empty: containerd's default registry.k8s.io/pause")
	var nativeImages []string
	fs.Func("native-image", "an image reference whose layers are prepared natively even for guest-pull handlers (repeatable; a repository without tag or digest: all of its tags)",
		func(ref string) error {
			if _, err := snapshotter.ParseNativeImage(ref, "--native-image"); err != nil {
				return err
			}
			nativeImages = append(nativeImages, ref)
			return nil
		})
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
	sn, err := snapshotter.New(*root, snapshotter.Options{Log: log, NativeImages: nativeImages, ContainerdConfig: *containerdConfig})
	if err != nil {
		return err
	}
	defer sn.Close()
	for _, n := range sn.NativeImages() {
		log.Info("layers prepared natively", "image", n.Ref, "source", n.Source)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("serving", "address", *address, "root", *root, "containerd-config", *containerdConfig)
	return snapshotter.Serve(ctx, sn, *address)
}
