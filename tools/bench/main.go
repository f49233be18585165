// Command bench measures what a veil pod costs next to runc on the same
// machine in the same run, through crictl against the end-to-end tier's
// private containerd (tools/e2e/harness): pod start (runp -> create ->
// start -> first output line, interleaved between handlers) with veil's
// phases from the shim's metrics socket, a bare `qemu -kernel` boot of the
// same guest to agent-ready, host memory (PSS, RSS) and CPU per idle pod
// of veil, veil-dev and runc (-idle-handlers; for the veil handlers split
// by QEMU's mappings, smaps.go), from which -write-runtimeclass rewrites
// the RuntimeClasses' overhead, N pods started at once (also over
// the host CPU time of one start), and (pull.go, -pull-mib; -pull-only alone) an image of
// random layers pulled by containerd on the host and by the veil-dev guest,
// plain and encrypted, with the pull's time and memory high-water mark
// (containerd's VmRSS; the guest's MemTotal - MemAvailable, sampled by a
// container in the pod). It writes bench.json (every sample, the machine) and
// bench.png (tools/bench/report) and prints a table; --compare OLD.json
// prints the change of every figure. `make bench` runs it; see README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/tools/bench/report"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	flag.IntVar(&o.runs, "runs", 10, "pod starts per handler (and bare boots)")
	flag.IntVar(&o.warmup, "warmup", 1, "unrecorded pod starts per handler before measuring")
	handlers := flag.String("handlers", "veil,runc", "CRI handlers to compare, interleaved in this order")
	conc := flag.String("concurrency", "1,2,4,8", "numbers of pods to start at once (empty: skip)")
	idle := flag.String("idle", "1,10", "numbers of idle pods to measure host memory with (empty: skip)")
	idleHandlers := flag.String("idle-handlers", "veil,veil-dev,runc", "CRI handlers whose idle pods' memory and CPU to measure, in this order (veil-dev's after every other pod)")
	flag.DurationVar(&o.idleCPUWindow, "idle-cpu-window", 10*time.Second, "how long to count the idle pods' CPU time after measuring their memory (0: skip)")
	flag.UintVar(&o.tcgCacheMiB, "tcg-cache-mib", uint(qemu.DefaultTCGTranslationCacheMiB), "QEMU's TCG translation cache size set in the veil config (MiB)")
	flag.BoolVar(&o.reclaim, "reclaim", false, "free page reporting in the veil VMs (the veil config's reclaim_guest_freed_memory)")
	flag.BoolVar(&o.initrd, "initrd", false, "boot the veil VMs from initrd.img instead of the shared root image rootfs.erofs (the veil config's rootfs_image)")
	out := flag.String("out", "build/bench", "directory for bench.json and bench.png")
	compare := flag.String("compare", "", "an earlier bench.json: print the change of every figure")
	from := flag.String("from", "", "do not measure: print the table of this bench.json, draw its chart into -out (and compare)")
	flag.IntVar(&o.pullMiB, "pull-mib", 200, "pull benchmark: MiB of random layers on busybox, pulled on the host and in the veil-dev guest, plain and encrypted (0: skip)")
	flag.IntVar(&o.pullLayers, "pull-layers", 4, "pull benchmark: number of random layers")
	flag.IntVar(&o.pullRuns, "pull-runs", 2, "pull benchmark: pulls of each kind")
	flag.BoolVar(&o.pullOnly, "pull-only", false, "run only the pull benchmark")
	logs := flag.String("logs", "", "keep containerd's and the registry's logs in this directory")
	writeRC := flag.String("write-runtimeclass", "", "rewrite the overhead memory (and its veil.io/overhead note) of each measured veil handler's RuntimeClass in this manifest (runtimeclass/runtimeclasses.yaml) from the run's idle-pod memory")
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	var err error
	if o.concurrency, err = intList("concurrency", *conc); err != nil {
		return err
	}
	if o.idle, err = intList("idle", *idle); err != nil {
		return err
	}
	if o.runs < 1 {
		return fmt.Errorf("-runs %d: need at least 1", o.runs)
	}
	if o.pullMiB < 0 || o.pullLayers < 1 || o.pullRuns < 1 {
		return fmt.Errorf("-pull-mib %d, -pull-layers %d, -pull-runs %d: want -pull-mib >= 0 and at least one layer and run", o.pullMiB, o.pullLayers, o.pullRuns)
	}
	if o.pullOnly && o.pullMiB == 0 {
		return fmt.Errorf("-pull-only with -pull-mib 0: nothing to measure")
	}
	o.handlers = strings.Split(*handlers, ",")
	if strings.TrimSpace(*idleHandlers) != "" {
		o.idleHandlers = strings.Split(*idleHandlers, ",")
	}
	if *logs != "" {
		// The harness takes a relative log directory as inside its own.
		if o.logDir, err = filepath.Abs(*logs); err != nil {
			return err
		}
	}

	var res *report.Result
	if *from != "" {
		if res, err = report.Read(*from); err != nil {
			return err
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", *out, err)
		}
		if err := report.WriteChart(filepath.Join(*out, "bench.png"), res); err != nil {
			return err
		}
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		o.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
		if res, err = measure(ctx, o); err != nil {
			return err
		}
		if err := os.MkdirAll(*out, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", *out, err)
		}
		if err := report.Write(filepath.Join(*out, "bench.json"), res); err != nil {
			return err
		}
		if err := report.WriteChart(filepath.Join(*out, "bench.png"), res); err != nil {
			return err
		}
		fmt.Printf("wrote %s and %s\n\n", filepath.Join(*out, "bench.json"), filepath.Join(*out, "bench.png"))
	}
	if err := report.WriteTable(os.Stdout, res); err != nil {
		return err
	}
	if *writeRC != "" {
		if err := writeRuntimeClass(*writeRC, res); err != nil {
			return err
		}
	}
	if *compare != "" {
		old, err := report.Read(*compare)
		if err != nil {
			return err
		}
		fmt.Printf("\nchange from %s (%s):\n", *compare, old.Started.Format("2006-01-02 15:04"))
		return report.WriteComparison(os.Stdout, report.Compare(old, res))
	}
	return nil
}

// intList parses "1,2,4" (empty: none).
func intList(flagName, s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s: %q is not a positive number", flagName, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// writeRuntimeClass rewrites, in the RuntimeClass manifest at path, the
// overhead of each veil handler the run measured idle pods of, and of the
// handlers measured as one of them (report.StandIns).
func writeRuntimeClass(path string, res *report.Result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the RuntimeClass manifest: %w", err)
	}
	overheads := res.RuntimeClassOverheads()
	if len(overheads) == 0 {
		return fmt.Errorf("-write-runtimeclass: the run has no idle-pod memory of a veil handler (-idle, -idle-handlers, and a run from after RSS was recorded)")
	}
	for _, o := range overheads {
		if b, err = report.ApplyOverhead(b, []string{o.RuntimeClass()}, o); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Printf("\n%s: RuntimeClass %s overhead memory %dMi (%s)\n", path, o.RuntimeClass(), o.MemoryMiB, o.Note())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("writing the RuntimeClass manifest: %w", err)
	}
	return nil
}
