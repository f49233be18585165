package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/shim"
	"github.com/veil-runtime/veil/shim/metrics"
)

// scrapeTimeout bounds one shim's scrape.
const scrapeTimeout = 10 * time.Second

func metricsCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	root := fs.String("root", shim.DefaultStateRoot, "the shims' state root (each pod's metrics.sock is in <root>/<namespace>/<sandbox>)")
	format := fs.String("format", "prometheus", "output: prometheus (aggregated exposition with namespace and sandbox labels) or table")
	listen := fs.String("listen", "", "serve the aggregate over HTTP on ADDR (host:port) at /metrics instead of printing it once")
	if err := cli.Parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("metrics: unexpected arguments %q", fs.Args())
	}
	if *format != "prometheus" && *format != "table" {
		return fmt.Errorf("metrics: --format %q is not one of prometheus, table", *format)
	}
	if *listen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, unix.SIGTERM)
		defer stop()
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("metrics: listening on %s: %w", *listen, err)
		}
		slog.Info("serving veil metrics", "addr", l.Addr().String(), "root", *root)
		return serveMetrics(ctx, l, *root)
	}
	samples, err := scrapeNode(context.Background(), *root)
	if err != nil {
		return err
	}
	if *format == "table" {
		return writeTable(stdout, samples)
	}
	return metrics.WriteText(stdout, metrics.Aggregate(samples))
}

// scrapeNode scrapes every shim under root.
func scrapeNode(ctx context.Context, root string) ([]metrics.Sample, error) {
	targets, err := metrics.Discover(root)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return metrics.ScrapeAll(ctx, targets, scrapeTimeout), nil
}

// serveMetrics serves the node's aggregate at /metrics on l until ctx ends;
// every request scrapes the shims afresh.
func serveMetrics(ctx context.Context, l net.Listener, root string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		samples, err := scrapeNode(r.Context(), root)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := metrics.WriteText(w, metrics.Aggregate(samples)); err != nil {
			slog.Warn("writing metrics", "err", err)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serving: %w", err)
	}
	return nil
}

// writeTable prints one line per pod: how long its start took, where the
// boot went, and what its host processes and guest hold.
func writeTable(w io.Writer, samples []metrics.Sample) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSANDBOX\tUP\tSTART\tVM BOOT\tKERNEL->READY\tQEMU PSS\tSHIM PSS\tGUEST MEM\tCONTAINERS")
	for _, s := range samples {
		if s.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\tno\t-\t-\t-\t-\t-\t-\t-\n", s.Namespace, s.Sandbox)
			continue
		}
		f := s.Families
		start := "-"
		if t0, ok := metrics.Timestamp(f, "veil_pod_phase_timestamp_seconds", map[string]string{"phase": metrics.PhaseShimStart}); ok {
			if t1, ok := metrics.Timestamp(f, "veil_pod_phase_timestamp_seconds", map[string]string{"phase": metrics.PhaseSandboxCreated}); ok {
				start = t1.Sub(t0).Round(time.Millisecond).String()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\tyes\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Namespace, s.Sandbox, start,
			seconds(f, "veil_vm_boot_seconds", nil),
			seconds(f, "veil_guest_boot_seconds", map[string]string{"stage": "kernel_to_ready"}),
			mib(f, "veil_process_pss_bytes", map[string]string{"process": "qemu"}),
			mib(f, "veil_process_pss_bytes", map[string]string{"process": "shim"}),
			mib(f, "veil_guest_memory_bytes", nil),
			countContainers(f))
	}
	return tw.Flush()
}

func seconds(f map[string]*dto.MetricFamily, name string, labels map[string]string) string {
	v, ok := metrics.Value(f, name, labels)
	if !ok {
		return "-"
	}
	return time.Duration(v * float64(time.Second)).Round(time.Millisecond).String()
}

func mib(f map[string]*dto.MetricFamily, name string, labels map[string]string) string {
	v, ok := metrics.Value(f, name, labels)
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", v/(1<<20))
}

// countContainers counts the containers with a created phase.
func countContainers(f map[string]*dto.MetricFamily) int {
	n := 0
	for _, m := range f["veil_container_phase_timestamp_seconds"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "phase" && l.GetValue() == metrics.ContainerCreated {
				n++
			}
		}
	}
	return n
}
