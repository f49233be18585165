//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestConfidential runs pods under veil-dev (the confidential flow with the
// software "sample" TEE) through crictl: the handler's default init-data
// (harness.VeilDevPolicy: the pod's shared directory, reading output; no
// exec, no host mounts; images pulled in the guest) is enforced by the agent, and
// volumes reach the containers as guest copies or guest memory, never as a
// host share. It runs when VEIL_E2E_HANDLERS names veil-dev.
func TestConfidential(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-confidential", 15*time.Minute)

	// kubelet-shaped volume directories: <root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>.
	kubelet := t.TempDir()
	volumes := filepath.Join(kubelet, "pods", "conf-uid", "volumes")
	configMap := filepath.Join(volumes, "kubernetes.io~configmap", "game")
	atomicWrite(t, configMap, "..2026_11_27_10_00_00.1", map[string]string{"game.properties": "lives=3"})
	emptyDir := filepath.Join(volumes, "kubernetes.io~empty-dir", "scratch")
	if err := os.MkdirAll(emptyDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(emptyDir, 0o777); err != nil {
		t.Fatal(err)
	}

	pod := runPod(t, ctx, harness.VeilDev, "conf-main")
	// Prints the configMap's key whenever it changes, after one line per
	// mount of interest (filesystem type and options, as the guest sees
	// them) and a write to the emptyDir.
	script := `awk '$2=="/etc/game"||$2=="/scratch"||$2=="/etc/hosts"{print "mount", $2, $3, $4}' /proc/mounts
echo hi > /scratch/f && echo "scratch: $(cat /scratch/f)"
last=""
while true; do
  cur=$(cat /etc/game/game.properties)
  if [ "$cur" != "$last" ]; then echo "game: $cur"; last=$cur; fi
  sleep 1
done`
	cfg := harness.ContainerConfig("watch", env.Image(testimages.BusyboxImage), []string{"sh", "-c", script}, false)
	cfg["mounts"] = []map[string]any{
		{"container_path": "/etc/game", "host_path": configMap, "readonly": true},
		{"container_path": "/scratch", "host_path": emptyDir},
	}
	id, err := env.StartContainer(ctx, pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
		t.Fatal(err)
	}

	t.Run("output readable when the policy allows it", func(t *testing.T) {
		logs := waitLogs(t, ctx, id, "game: lives=3", time.Minute)
		// The guest sees copies in guest memory (tmpfs), never the host's
		// 9p share; read-only stays read-only.
		for _, want := range []string{"mount /etc/game tmpfs ro", "mount /scratch tmpfs rw", "mount /etc/hosts tmpfs", "scratch: hi"} {
			if !strings.Contains(logs, want) {
				t.Errorf("container output lacks %q:\n%s", want, logs)
			}
		}
		if strings.Contains(logs, " 9p ") {
			t.Errorf("a volume is a 9p share from the host:\n%s", logs)
		}
	})

	t.Run("exec refused naming the rule", func(t *testing.T) {
		out, err := env.Run(ctx, env.Crictl(ctx, "exec", "--sync", id, "true"))
		if err == nil || !strings.Contains(err.Error(), "allow_exec") {
			t.Fatalf("crictl exec under a policy without allow_exec: %v (output %q), want a denial naming allow_exec", err, out)
		}
	})

	t.Run("configMap update reaches the running container", func(t *testing.T) {
		start := time.Now()
		atomicWrite(t, configMap, "..2026_11_27_10_05_00.2", map[string]string{"game.properties": "lives=5"})
		waitLogs(t, ctx, id, "game: lives=5", 30*time.Second)
		t.Logf("update seen in the guest after %s", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("symlink escaping the volume refused", func(t *testing.T) {
		for name, target := range map[string]string{"absolute": "/etc/shadow", "dotdot": "../../../../etc/shadow"} {
			dir := filepath.Join(volumes, "kubernetes.io~configmap", "evil-"+name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, "key")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			cfg := harness.ContainerConfig("evil-"+name, env.Image(testimages.BusyboxImage), []string{"true"}, false)
			cfg["mounts"] = []map[string]any{{"container_path": "/etc/evil", "host_path": dir, "readonly": true}}
			// CRI's CreateContainer only records the container; the shim's
			// task Create runs on StartContainer.
			_, err := env.StartContainer(ctx, pod, cfg)
			if err == nil || !strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "leaves the volume") {
				t.Errorf("container with %s symlink %s -> %s: %v, want a refusal naming the link", name, link, target, err)
			} else {
				t.Logf("%s: %v", name, err)
			}
		}
	})

	t.Run("hostPath refused naming path and handler", func(t *testing.T) {
		dir := t.TempDir()
		cfg := harness.ContainerConfig("hostpath", env.Image(testimages.BusyboxImage), []string{"true"}, false)
		cfg["mounts"] = []map[string]any{{"container_path": "/data", "host_path": dir}}
		_, err := env.StartContainer(ctx, pod, cfg)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "veil-dev") || !strings.Contains(err.Error(), "allow_host_mounts") {
			t.Errorf("container with hostPath %s: %v, want a refusal naming the path, veil-dev and allow_host_mounts", dir, err)
		} else {
			t.Logf("%v", err)
		}
	})

	t.Run("init-data annotation", func(t *testing.T) {
		// A pod's own init-data (io.veil.initdata, passed by containerd's
		// pod_annotations) replaces the handler's: this one allows exec.
		doc := env.VeilDevInitData(harness.VeilDevPolicy + "allow_exec = true\n")
		ann, err := initdata.EncodeAnnotation([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		p, err := env.RunPodWith(ctx, harness.VeilDev, "conf-annotated", func(c map[string]any) {
			c["annotations"] = map[string]string{initdata.Annotation: ann}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.RemovePod(context.WithoutCancel(ctx), p) })
		cid, err := env.StartContainer(ctx, p, harness.ContainerConfig("main", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, cid, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}
		if out := crictl(t, ctx, "exec", "--sync", cid, "sh", "-c", "echo exec-$((6*7))"); strings.TrimSpace(out) != "exec-42" {
			t.Errorf("exec allowed by the pod's init-data printed %q, want exec-42", out)
		}
	})

	t.Run("cc_init_data annotation", func(t *testing.T) {
		// Confidential Containers' annotation carries init-data too: a
		// document with guest-components' aa.toml (its broker mapped) runs
		// and its agent policy (exec allowed) is the one enforced; one with
		// a Rego policy.rego is refused naming it.
		doc := env.VeilDevInitData(harness.VeilDevPolicy+"allow_exec = true\n") +
			"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = 'http://10.88.0.1:8080'\n'''\n"
		p, err := env.RunPodWith(ctx, harness.VeilDev, "conf-coco", func(c map[string]any) {
			c["annotations"] = map[string]string{initdata.CoCoAnnotation: mustAnnotation(t, doc)}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.RemovePod(context.WithoutCancel(ctx), p) })
		cid, err := env.StartContainer(ctx, p, harness.ContainerConfig("main", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, cid, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}
		if out := crictl(t, ctx, "exec", "--sync", cid, "sh", "-c", "echo coco-$((6*7))"); strings.TrimSpace(out) != "coco-42" {
			t.Errorf("exec allowed by the cc_init_data document printed %q, want coco-42", out)
		}
		rego := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"policy.rego\" = '''\npackage agent_policy\ndefault ExecProcessRequest := true\n'''\n"
		_, err = env.RunPodWith(ctx, harness.VeilDev, "conf-coco-rego", func(c map[string]any) {
			c["annotations"] = map[string]string{initdata.CoCoAnnotation: mustAnnotation(t, rego)}
		})
		if err == nil || !strings.Contains(err.Error(), initdata.CoCoAnnotation) || !strings.Contains(err.Error(), "policy.rego") {
			t.Errorf("pod with a Rego cc_init_data: %v, want a refusal naming the annotation and policy.rego", err)
		} else {
			t.Logf("%v", err)
		}
	})

	t.Run("malformed or oversized init-data annotation refused", func(t *testing.T) {
		var big bytes.Buffer
		zw := gzip.NewWriter(&big)
		doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n# " + strings.Repeat("x", 300<<10) + "\n"
		if _, err := zw.Write([]byte(doc)); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		for name, value := range map[string]string{
			"not base64":   "!!not base64!!",
			"over 256 KiB": base64.StdEncoding.EncodeToString(big.Bytes()),
			"unknown key":  mustAnnotation(t, "version = \"0.1.0\"\nalgorithm = \"sha256\"\nrootkit = true\n"),
		} {
			_, err := env.RunPodWith(ctx, harness.VeilDev, "conf-bad-"+strings.ReplaceAll(name, " ", "-"), func(c map[string]any) {
				c["annotations"] = map[string]string{initdata.Annotation: value}
			})
			if err == nil || !strings.Contains(err.Error(), initdata.Annotation) {
				t.Errorf("pod with init-data annotation %s: %v, want a refusal naming %s", name, err, initdata.Annotation)
			} else {
				t.Logf("%s: %v", name, err)
			}
		}
	})
}

func mustAnnotation(t *testing.T, doc string) string {
	t.Helper()
	v, err := initdata.EncodeAnnotation([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// atomicWrite updates dir as kubelet's atomic writer does: the files in a
// new timestamped directory, "..data" swapped to it by rename, each key a
// link through "..data", the previous timestamped directory removed.
func atomicWrite(t *testing.T, dir, ts string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(dir, ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k := range files {
		if _, err := os.Lstat(filepath.Join(dir, k)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLogs polls the container's log (there is no event for a line being
// written) until it contains want, and returns it.
func waitLogs(t *testing.T, ctx context.Context, id, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		logs := crictl(t, ctx, "logs", id)
		if strings.Contains(logs, want) {
			return logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s's log lacks %q after %s:\n%s", id, want, timeout, logs)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}
