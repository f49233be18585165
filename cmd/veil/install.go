package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
	"github.com/veil-runtime/veil/runtimeclass/install"
)

// nodeFlags are the flags install and uninstall share.
type nodeFlags struct {
	root, prefix              string
	restart, restartCmd, unit string
	label, node               string
	wait                      bool
}

func (n *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.root, "root", "/", "the host's root directory (/host in the installer's pod); all other paths are host paths")
	fs.StringVar(&n.prefix, "prefix", install.DefaultPrefix, "where veil's files go")
	fs.StringVar(&n.restart, "restart", "auto", "how to restart containerd: auto (systemd when the host runs it, else --restart-command), systemd, command, none")
	fs.StringVar(&n.restartCmd, "restart-command", "", "shell command that restarts containerd on hosts without systemd (run with /bin/sh -c)")
	fs.StringVar(&n.unit, "systemd-unit", "containerd.service", "containerd's systemd unit")
	fs.StringVar(&n.label, "label", "auto", "node labels: auto (when running in a pod), kube (must), none")
	fs.StringVar(&n.node, "node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	fs.BoolVar(&n.wait, "wait", false, "after success, wait for SIGTERM (DaemonSet mode)")
}

func (n *nodeFlags) restarter() (install.Restarter, error) {
	return install.ChooseRestarter(n.restart, n.restartCmd, n.unit, n.root)
}

func (n *nodeFlags) labeler(log *slog.Logger) (install.Labeler, error) {
	switch n.label {
	case "none":
		return nil, nil
	case "kube":
		return install.InCluster(n.node, install.ServiceAccountDir)
	case "auto":
		if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
			log.Info("not in a Kubernetes pod: not labelling the node")
			return nil, nil
		}
		return install.InCluster(n.node, install.ServiceAccountDir)
	}
	return nil, fmt.Errorf("--label %q: want auto, kube or none", n.label)
}

func newLogger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }

// waitForSignal marks the work done (install.ReadyFile, in the pod's own
// filesystem: the DaemonSet's readiness probe) and blocks until SIGTERM or
// SIGINT: the DaemonSet's pod stays up (and Ready) after installing.
func waitForSignal(log *slog.Logger, readyFile string) error {
	if err := os.MkdirAll(filepath.Dir(readyFile), 0o755); err != nil {
		return fmt.Errorf("creating the readiness file's directory: %w", err)
	}
	if err := os.WriteFile(readyFile, []byte("done\n"), 0o644); err != nil {
		return fmt.Errorf("writing the readiness file: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("done; waiting for SIGTERM", "ready_file", readyFile)
	<-ctx.Done()
	return nil
}

func installCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	var n nodeFlags
	n.register(fs)
	binDir := fs.String("bin-dir", "", "directory with containerd-shim-veil-v2 and veil (default: this binary's directory)")
	guestDir := fs.String("guest-dir", "", "guest image to install: vmlinuz, vmlinux, initrd.img, rootfs.erofs, manifest.json (default: BIN-DIR/../share/veil)")
	cfgPath := fs.String("containerd-config", install.DefaultContainerdConfig, "containerd's main config")
	dropIn := fs.String("drop-in", install.DefaultDropIn, "the drop-in file with veil's runtime handlers")
	containerdBin := fs.String("containerd", "", "the host's containerd binary, asked for its version (default: on the host's PATH)")
	containerdVersion := fs.String("containerd-version", "", "containerd's version, when the binary cannot be run (e.g. 2.4.2)")
	handlers := fs.String("handlers", "", "CRI runtime handlers to add (default: veil, veil-dev, and veil-snp/veil-tdx where veil check finds SEV-SNP/TDX)")
	snapshotter := fs.String("snapshotter-address", containerdcfg.SnapshotterAddress, "veil-snapshotter's socket (host path) for the guest-pull handlers")
	if err := cli.Parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("install: unexpected arguments %q", fs.Args())
	}
	log := newLogger()
	if *binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this binary's directory: %w", err)
		}
		*binDir = filepath.Dir(exe)
	}
	if *guestDir == "" {
		*guestDir = filepath.Join(filepath.Dir(*binDir), "share", "veil")
	}
	requested := install.Handlers
	if *handlers != "" {
		requested = strings.Split(*handlers, ",")
	}
	for _, h := range requested {
		if !slices.Contains(install.Handlers, h) {
			return fmt.Errorf("--handlers: %q is not one of %s", h, strings.Join(install.Handlers, ", "))
		}
	}
	if *containerdVersion != "" {
		if _, err := containerdcfg.ParseVersion("containerd x " + *containerdVersion); err != nil {
			return fmt.Errorf("--containerd-version: %w", err)
		}
	}
	// check is `veil check` of the node against the guest image in
	// guestDir, with containerd's version from --containerd-version when
	// given (the binary then need not run).
	check := func(ctx context.Context, guestDir string) hostcheck.Report {
		f := hostcheck.Gather(ctx, hostcheck.Options{Root: n.root, Containerd: *containerdBin, GuestDir: guestDir})
		if *containerdVersion != "" {
			f.ContainerdPath, f.ContainerdVersionOut, f.ContainerdErr = "(--containerd-version)", "containerd x "+*containerdVersion, ""
		}
		return hostcheck.Evaluate(f)
	}
	report := check(context.Background(), filepath.Join(n.prefix, "share", "veil"))
	hs, notes := install.SelectHandlers(report, requested, *handlers != "")
	for _, note := range notes {
		log.Warn(note)
	}
	var ver *containerdcfg.Version
	switch {
	case *containerdVersion != "":
		v, _ := containerdcfg.ParseVersion("containerd x " + *containerdVersion)
		ver = &v
	case report.Containerd.Version != "":
		v, err := containerdcfg.ParseVersion("containerd x " + report.Containerd.Version)
		if err == nil {
			ver = &v
		}
	default:
		log.Warn("could not ask containerd for its version", "why", report.Containerd.Note)
	}
	restarter, err := n.restarter()
	if err != nil {
		return err
	}
	labeler, err := n.labeler(log)
	if err != nil {
		return err
	}
	rec, err := install.Install(context.Background(), install.Options{
		Root: n.root, Prefix: n.prefix,
		Source:            install.Source{BinDir: *binDir, GuestDir: *guestDir},
		ContainerdConfig:  *cfgPath,
		DropIn:            *dropIn,
		ContainerdVersion: ver,
		Handlers:          hs,
		Restarter:         restarter,
		Labeler:           labeler,
		Check: func(ctx context.Context) hostcheck.Report {
			report = check(ctx, filepath.Join(n.prefix, "share", "veil"))
			return report
		},
		SnapshotterAddress: *snapshotter,
		Log:                log,
	})
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	change := "left as it was (it already imports the drop-in)"
	switch {
	case rec.Config.Created:
		change = "created"
	case rec.Config.Edit != nil:
		change = "now imports " + rec.DropIn + " (original kept in " + filepath.Join(rec.Prefix, rec.Config.Backup) + ")"
	}
	fmt.Fprintf(stdout, "veil installed in %s: handlers %s in %s; %s %s; node TEE %s\n",
		rec.Prefix, strings.Join(rec.Handlers, ", "), rec.DropIn, rec.Config.Path, change, report.TEE)
	if n.wait {
		return waitForSignal(log, install.ReadyFile)
	}
	return nil
}

func uninstallCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	var n nodeFlags
	n.register(fs)
	force := fs.Bool("force", false, "uninstall even while veil pods' shims run (containerd then cannot clean those pods up)")
	if err := cli.Parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("uninstall: unexpected arguments %q", fs.Args())
	}
	log := newLogger()
	restarter, err := n.restarter()
	if err != nil {
		return err
	}
	labeler, err := n.labeler(log)
	if err != nil {
		return err
	}
	err = install.Uninstall(context.Background(), install.Options{
		Root: n.root, Prefix: n.prefix, Restarter: restarter, Labeler: labeler, Log: log, Force: *force,
	})
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	fmt.Fprintf(stdout, "veil uninstalled from %s\n", n.prefix)
	if n.wait {
		return waitForSignal(log, install.ReadyFile)
	}
	return nil
}
