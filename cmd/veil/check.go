package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
)

func checkCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	root := fs.String("root", "/", "the host's root directory (/host in the installer's pod)")
	guestDir := fs.String("guest-dir", hostcheck.DefaultGuestDir, "installed guest image (vmlinuz, vmlinux, initrd.img, rootfs.erofs, manifest.json)")
	qemu := fs.String("qemu", "", "QEMU binary (default: qemu-system-x86_64 on PATH)")
	containerd := fs.String("containerd", "", "containerd binary (default: containerd on PATH)")
	if err := cli.Parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("check: unexpected arguments %q", fs.Args())
	}
	r := hostcheck.Evaluate(hostcheck.Gather(context.Background(), hostcheck.Options{
		Root: *root, GuestDir: *guestDir, QEMU: *qemu, Containerd: *containerd,
	}))
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else if err := hostcheck.WriteText(stdout, r); err != nil {
		return err
	}
	if len(r.Problems) > 0 {
		return fmt.Errorf("check: veil cannot run pods here: %s", strings.Join(r.Problems, "; "))
	}
	return nil
}

// helpIsNoError turns -h's flag.ErrHelp (usage already printed) into success.
func helpIsNoError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}
