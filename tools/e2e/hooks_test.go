//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestCtrRunPrestartHook is issue 15's "the shim drops all hooks": ctr
// runs a container whose spec has a prestart hook and joins a network
// namespace the test made. The hook runs on the host and records the OCI
// state it read on stdin, its own network namespace and that of the pid in
// the state. Under every handler the state's pid must be in that
// namespace (nerdctl's CNI hook configures /proc/<pid>/ns/net), and the
// state must carry the container's id, bundle, status "creating" and
// annotations; under every handler the hook itself runs in the runtime's
// namespace (containerd's, the environment's), as the OCI spec says.
func TestCtrRunPrestartHook(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 5*time.Minute)
		dir := t.TempDir()
		ns, err := harness.NewNetNS(ctx, filepath.Join(dir, "netns"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })

		image := env.Image(testimages.BusyboxImage)
		if _, err := env.Run(ctx, env.Ctr(ctx, "images", "pull", "--plain-http", image)); err != nil {
			t.Fatal(err)
		}
		rootfs := filepath.Join(dir, "rootfs")
		if err := os.Mkdir(rootfs, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Run(ctx, env.Ctr(ctx, "images", "mount", "--rw", image, rootfs)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _ = env.Run(ctx, env.Ctr(ctx, "images", "unmount", "--rm", rootfs))
		})

		out := filepath.Join(dir, "hook")
		hook := filepath.Join(dir, "hook.sh")
		script := "#!/bin/sh\ncat > " + out + ".state\n" +
			"pid=$(sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/' " + out + ".state)\n" +
			"readlink /proc/self/ns/net > " + out + ".ns\n" +
			"readlink /proc/$pid/ns/net > " + out + ".pidns\n"
		if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		specJSON, err := env.Run(ctx, env.Ctr(ctx, "oci", "spec"))
		if err != nil {
			t.Fatal(err)
		}
		var spec specs.Spec
		if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
			t.Fatal(err)
		}
		id := "hook-" + handler
		spec.Root = &specs.Root{Path: rootfs}
		spec.Process.Args = []string{"/bin/sh", "-c", "exit 0"}
		spec.Process.Terminal = false
		spec.Annotations = map[string]string{"io.veil.test": "hook"}
		for i, n := range spec.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path = ns.Path
			}
		}
		timeout := 30
		//nolint:staticcheck // prestart: what the NVIDIA toolkit uses
		spec.Hooks = &specs.Hooks{Prestart: []specs.Hook{{Path: hook, Args: []string{"hook.sh"}, Timeout: &timeout}}}
		specPath := filepath.Join(dir, "config.json")
		b, _ := json.Marshal(&spec)
		if err := os.WriteFile(specPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"run", "--rm", "--config", specPath}, env.CtrRuntimeArgs(env.Handlers[handler])...)
		if _, err := env.Run(ctx, env.Ctr(ctx, append(args, id)...)); err != nil {
			t.Fatal(err)
		}

		var st syscall.Stat_t
		if err := syscall.Stat(ns.Path, &st); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("net:[%d]", st.Ino)
		read := func(suffix string) string {
			b, err := os.ReadFile(out + suffix)
			if err != nil {
				t.Fatalf("the prestart hook did not run: %v", err)
			}
			return strings.TrimSpace(string(b))
		}
		// Hooks run in the runtime's namespace, as the spec says.
		if err := syscall.Stat(env.NetNS.Path, &st); err != nil {
			t.Fatal(err)
		}
		if got, runtimeNS := read(".ns"), fmt.Sprintf("net:[%d]", st.Ino); got != runtimeNS {
			t.Errorf("the hook ran in %s, not in containerd's namespace %s (the pod's is %s)", got, runtimeNS, want)
		}
		if got := read(".pidns"); got != want {
			t.Errorf("the state's pid is in %s, the pod's namespace is %s", got, want)
		}
		var state specs.State
		if err := json.Unmarshal([]byte(read(".state")), &state); err != nil {
			t.Fatal(err)
		}
		if state.ID != id || state.Status != specs.StateCreating || state.Bundle == "" || state.Annotations["io.veil.test"] != "hook" || state.Version == "" {
			t.Errorf("hook state %+v; want id %s, status creating, a bundle, the annotation", state, id)
		}
	})
}
