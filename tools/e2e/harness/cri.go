package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PodConfig returns a CRI pod sandbox config (crictl's JSON form) for a pod
// named name whose logs go to logDir.
func PodConfig(name, logDir string) map[string]any {
	return map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "veil-e2e", "uid": name + "-uid", "attempt": 1},
		"log_directory": logDir,
		"linux":         map[string]any{},
	}
}

// ContainerConfig returns a CRI container config for image running command
// (the image's entrypoint when command is empty), logging to NAME.log.
func ContainerConfig(name, image string, command []string, tty bool) map[string]any {
	c := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	if len(command) > 0 {
		c["command"] = command
	}
	if tty {
		c["tty"] = true
		c["stdin"] = true
	}
	return c
}

// writeJSON writes v as JSON into the environment's spec directory.
func (e *Env) writeJSON(name string, v any) (string, error) {
	dir := filepath.Join(e.Dir, "specs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encoding %s: %w", name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", p, err)
	}
	return p, nil
}

// Pod is a pod sandbox started with crictl.
type Pod struct {
	ID, Name, Handler string
	LogDir            string
	config            string // path of the pod config file
}

// RunPod starts a pod named name under handler (`crictl runp --runtime`).
func (e *Env) RunPod(ctx context.Context, handler, name string) (*Pod, error) {
	return e.RunPodWith(ctx, handler, name, nil)
}

// RunPodWith is RunPod with edit applied to the pod config (PodConfig's
// map) first: port mappings, DNS config, ...
func (e *Env) RunPodWith(ctx context.Context, handler, name string, edit func(config map[string]any)) (*Pod, error) {
	logDir := filepath.Join(e.Dir, "pod-logs", name)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating pod log directory: %w", err)
	}
	podConfig := PodConfig(name, logDir)
	if edit != nil {
		edit(podConfig)
	}
	cfg, err := e.writeJSON("pod-"+name+".json", podConfig)
	if err != nil {
		return nil, err
	}
	out, err := e.Run(ctx, e.Crictl(ctx, "runp", "--runtime", handler, cfg))
	if err != nil {
		return nil, fmt.Errorf("starting pod %s under %s: %w", name, handler, err)
	}
	e.track(strings.TrimSpace(out))
	return &Pod{ID: strings.TrimSpace(out), Name: name, Handler: handler, LogDir: logDir, config: cfg}, nil
}

// CreateContainer creates (not starts) a container in pod from the given
// CRI container config and returns its ID.
func (e *Env) CreateContainer(ctx context.Context, pod *Pod, config map[string]any) (string, error) {
	name := config["metadata"].(map[string]any)["name"].(string)
	p, err := e.writeJSON("ctr-"+pod.Name+"-"+name+".json", config)
	if err != nil {
		return "", err
	}
	out, err := e.Run(ctx, e.Crictl(ctx, "create", "--with-pull", pod.ID, p, pod.config))
	if err != nil {
		return "", fmt.Errorf("creating container %s in pod %s: %w", name, pod.Name, err)
	}
	e.track(strings.TrimSpace(out))
	return strings.TrimSpace(out), nil
}

// StartContainer creates and starts a container in pod.
func (e *Env) StartContainer(ctx context.Context, pod *Pod, config map[string]any) (string, error) {
	id, err := e.CreateContainer(ctx, pod, config)
	if err != nil {
		return "", err
	}
	if _, err := e.Run(ctx, e.Crictl(ctx, "start", id)); err != nil {
		return "", fmt.Errorf("starting container %s: %w", id, err)
	}
	return id, nil
}

// ContainerStatus is the part of `crictl inspect` the tests look at.
type ContainerStatus struct {
	State    string `json:"state"`
	ExitCode int    `json:"exitCode"`
	Reason   string `json:"reason"`
}

// InspectContainer returns a container's state and exit code.
func (e *Env) InspectContainer(ctx context.Context, id string) (ContainerStatus, error) {
	out, err := e.Run(ctx, e.Crictl(ctx, "inspect", "-o", "json", id))
	if err != nil {
		return ContainerStatus{}, err
	}
	var v struct {
		Status ContainerStatus `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return ContainerStatus{}, fmt.Errorf("decoding crictl inspect of %s: %w", id, err)
	}
	return v.Status, nil
}

// WaitContainer polls until the container reaches state (for example
// "CONTAINER_EXITED") or timeout passes.
func (e *Env) WaitContainer(ctx context.Context, id, state string, timeout time.Duration) (ContainerStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := e.InspectContainer(ctx, id)
		if err == nil && st.State == state {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("waiting for container %s to be %s: still %q after %s (last error: %w)", id, state, st.State, timeout, err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// RemovePod stops and removes a pod and its containers.
func (e *Env) RemovePod(ctx context.Context, pod *Pod) error {
	if _, err := e.Run(ctx, e.Crictl(ctx, "stopp", pod.ID)); err != nil {
		return err
	}
	_, err := e.Run(ctx, e.Crictl(ctx, "rmp", pod.ID))
	return err
}
