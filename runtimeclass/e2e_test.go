//go:build e2e

package runtimeclass

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// restartFunc restarts the private containerd.
type restartFunc func(context.Context) error

func (f restartFunc) Restart(ctx context.Context) error { return f(ctx) }
func (restartFunc) String() string                      { return "harness restart" }

// withoutVeil drops what is veil's from a config rendered by
// harness.ContainerdConfig: the tables of the veil handlers and veil's
// proxy snapshotter.
func withoutVeil(cfg string) string {
	prefixes := []string{`[proxy_plugins."veil"]`}
	for _, h := range []string{harness.Veil, harness.VeilDev} {
		prefixes = append(prefixes, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.\""+h+"\"")
	}
	var out []string
	skip := false
	for _, l := range strings.SplitAfter(cfg, "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "[") {
			skip = false
			for _, p := range prefixes {
				skip = skip || strings.HasPrefix(t, p)
			}
		}
		if !skip {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// The proof of issue 7: `veil install` into a fresh prefix against the
// private containerd of the e2e tier, whose config has no veil handler;
// containerd restarted; a crictl pod runs on the installed `veil` handler
// with the installed guest kernel; `veil uninstall`; the config is
// byte-identical to before and the handler is gone.
func TestInstallRunUninstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	env, err := harness.Start(ctx, harness.Options{LogDir: os.Getenv("VEIL_E2E_LOGS"), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Close(); err != nil {
			t.Error(err)
		}
	}()
	run := func(args ...string) (string, error) { return env.Run(ctx, env.Crictl(ctx, args...)) }

	// A stock config: the environment's, without its veil handlers and snapshotter.
	b, err := os.ReadFile(env.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	stock := withoutVeil(string(b))
	c, err := containerdcfg.Parse([]byte(stock), env.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Runtimes, ",") != "runc" {
		t.Fatalf("stock config runtimes %v, want runc only", c.Runtimes)
	}
	if err := os.WriteFile(env.ConfigPath(), []byte(stock), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := env.RestartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := run("info"); err != nil || strings.Contains(info, `"veil"`) {
		t.Fatalf("before install: crictl info mentions veil or failed (%v)", err)
	}

	// What the installer image would hold: the shim, the CLI, the guest image.
	binDir := t.TempDir()
	shim, err := os.ReadFile(filepath.Join(env.RepoRoot, "build/bin/containerd-shim-veil-v2"))
	if err != nil {
		t.Fatalf("the shim (make build): %v", err)
	}
	if err := os.WriteFile(filepath.Join(binDir, install.ShimBinary), shim, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(binDir, install.CLIBinary), "./cmd/veil")
	build.Dir = env.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building veil: %v: %s", err, out)
	}
	verOut, err := exec.CommandContext(ctx, env.Bin("containerd"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	ver, err := containerdcfg.ParseVersion(string(verOut))
	if err != nil {
		t.Fatal(err)
	}
	restarts := 0
	opts := install.Options{
		Prefix:            filepath.Join(env.Dir, "opt", "veil"),
		Source:            install.Source{BinDir: binDir, GuestDir: filepath.Join(env.RepoRoot, "build/guest")},
		ContainerdConfig:  env.ConfigPath(),
		DropIn:            filepath.Join(env.Dir, "conf.d", "veil.toml"),
		ContainerdVersion: &ver,
		Restarter: restartFunc(func(ctx context.Context) error {
			restarts++
			return env.RestartContainerd(ctx)
		}),
		Log: log,
	}

	rec, err := install.Install(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Config.Edit == nil || restarts != 1 {
		t.Fatalf("install: config change %+v, %d restarts; want the import added and one restart", rec.Config, restarts)
	}
	info, err := run("info")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range install.Handlers {
		if !strings.Contains(info, `"`+h+`"`) {
			t.Errorf("crictl info after install lacks runtime %s", h)
		}
	}

	// A pod on the installed handler boots the installed guest kernel.
	var manifest struct {
		Kernel struct {
			Release string `json:"release"`
		} `json:"kernel"`
	}
	mb, err := os.ReadFile(filepath.Join(opts.Prefix, "share/veil/manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &manifest); err != nil || manifest.Kernel.Release == "" {
		t.Fatalf("installed manifest: %v", err)
	}
	pod, err := env.RunPod(ctx, "veil", "installed-veil")
	if err != nil {
		t.Fatal(err)
	}
	id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("uname", env.Image(testimages.BusyboxImage), []string{"uname", "-r"}, false))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 5*time.Minute); err != nil || st.ExitCode != 0 {
		t.Fatalf("uname in the veil pod: %+v %v", st, err)
	}
	logs, err := run("logs", id)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(logs) != manifest.Kernel.Release {
		t.Fatalf("uname -r in the pod = %q, want the installed guest kernel %s", strings.TrimSpace(logs), manifest.Kernel.Release)
	}
	// The VM's cost, measured while the pod is up (its container has
	// exited, so this is the idle pod): QEMU's and the shim's resident
	// memory must fit in the RuntimeClass's overhead.podFixed.
	var o objects
	decodeFile(t, "runtimeclasses.yaml", &o)
	var overhead int64
	for _, rc := range o.runtimeClasses {
		if rc.Name == "veil" {
			overhead = rc.Overhead.PodFixed.Memory().Value()
		}
	}
	procs := podProcesses(t, pod.ID)
	var total int64
	for name, rss := range procs {
		t.Logf("pod %s: %s resident %d MiB", pod.ID[:12], name, rss>>20)
		total += rss
	}
	if procs["qemu-system-x86_64"] == 0 || procs[install.ShimBinary] == 0 {
		t.Fatalf("found no QEMU or shim process for pod %s: %v", pod.ID, procs)
	}
	t.Logf("QEMU + shim resident: %d MiB; RuntimeClass veil overhead.podFixed memory: %d MiB", total>>20, overhead>>20)
	if total > overhead {
		t.Errorf("QEMU + shim use %d MiB, more than the RuntimeClass overhead %d MiB: raise overhead.podFixed", total>>20, overhead>>20)
	}
	if err := env.RemovePod(ctx, pod); err != nil {
		t.Fatal(err)
	}

	// The pod's shim exits after its Shutdown; uninstall refuses while it runs.
	shimPath := filepath.Join(opts.Prefix, "bin", install.ShimBinary)
	for deadline := time.Now().Add(time.Minute); ; {
		if len(podProcesses(t, pod.ID)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod's processes still run a minute after rmp: %v (%s)", podProcesses(t, pod.ID), shimPath)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}

	// Uninstall: the config is the stock one again, byte for byte.
	if err := install.Uninstall(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if after, err := os.ReadFile(env.ConfigPath()); err != nil || string(after) != stock {
		t.Fatalf("config after uninstall differs from before install (%v):\n%s", err, after)
	}
	if restarts != 2 {
		t.Fatalf("%d restarts, want 2", restarts)
	}
	for _, p := range []string{opts.Prefix, opts.DropIn} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after uninstall (%v)", p, err)
		}
	}
	if info, err := run("info"); err != nil || strings.Contains(info, `"veil"`) {
		t.Fatalf("after uninstall: crictl info still mentions veil or failed (%v)", err)
	}
	if _, err := env.RunPod(ctx, "veil", "after-uninstall"); err == nil {
		t.Fatal("a veil pod started after uninstall")
	}
}

// podProcesses sums the resident memory (bytes) of the processes whose
// command line names the pod's sandbox ID, by executable name.
func podProcesses(t *testing.T, sandboxID string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), sandboxID) {
			continue
		}
		exe := filepath.Base(strings.SplitN(string(cmd), "\x00", 2)[0])
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				out[exe] += kb << 10
			}
		}
	}
	return out
}
