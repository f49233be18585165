// Command demo starts the end-to-end tier's private containerd, runs one
// busybox pod under each requested CRI handler with crictl, prints what the
// container saw (kernel, memory) side by side, and removes everything again.
// When veil-dev is among the handlers it also runs a veil-dev pod whose
// image is encrypted (image/encrypt, what `veil image encrypt` runs) for a
// key held by an in-process veil-kbs in dev mode: the guest attests, the
// broker releases the key and the container prints the decrypted file;
// then, with the broker's resource policy denying the key, the same pod
// fails naming the denied key (encrypted.go). `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// probe is what the demo container prints.
const probe = `echo "kernel: $(uname -r)"; echo "cpus:   $(nproc)"; free -m; head -3 /proc/meminfo`

func run() error {
	handlers := flag.String("handlers", harness.Runc, "comma-separated CRI handlers to run the pod under")
	logDir := flag.String("logs", "", "keep containerd's and the registry's logs in this directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	env, err := harness.Start(ctx, harness.Options{LogDir: *logDir, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := env.Close(); err != nil {
			log.Error("cleaning up", "err", err)
		}
	}()
	for _, h := range strings.Split(*handlers, ",") {
		if err := env.CheckHandler(h); err != nil {
			return err
		}
	}
	var titles, outs []string
	for _, h := range strings.Split(*handlers, ",") {
		out, took, err := runOnce(ctx, env, h)
		if err != nil {
			return err
		}
		titles = append(titles, fmt.Sprintf("%s (pod + container: %s)", h, took.Round(time.Millisecond)))
		outs = append(outs, out)
	}
	fmt.Print(sideBySide(titles, outs))
	for _, h := range strings.Split(*handlers, ",") {
		if h == harness.VeilDev {
			return encryptedDemo(ctx, env, os.Stdout)
		}
	}
	return nil
}

// runOnce runs the probe in a fresh pod under handler and returns its log.
func runOnce(ctx context.Context, env *harness.Env, handler string) (string, time.Duration, error) {
	start := time.Now()
	pod, err := env.RunPod(ctx, handler, "demo-"+handler)
	if err != nil {
		return "", 0, err
	}
	defer env.RemovePod(context.WithoutCancel(ctx), pod) //nolint:errcheck // env.Close removes it otherwise
	id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("probe",
		env.Image(testimages.BusyboxImage), []string{"sh", "-c", probe}, false))
	if err != nil {
		return "", 0, err
	}
	if _, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 5*time.Minute); err != nil {
		return "", 0, err
	}
	took := time.Since(start)
	out, err := env.Run(ctx, env.Crictl(ctx, "logs", id))
	return out, took, err
}
