package install

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Node labels the installer sets; the RuntimeClasses select on them.
const (
	LabelRuntime = "veil.io/runtime"
	LabelTEE     = "veil.io/tee"
)

// NodeLabels are the labels for a node whose TEE (hostcheck.TEE) is tee.
func NodeLabels(tee string) map[string]string {
	return map[string]string{LabelRuntime: "true", LabelTEE: tee}
}

// Labeler sets and removes labels on this node.
type Labeler interface {
	SetLabels(ctx context.Context, set map[string]string, remove []string) error
}

// ServiceAccountDir is where Kubernetes mounts a pod's service account.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Kube labels a node with one JSON merge patch to the API server, as the
// DaemonSet's service account: no client library, just
// PATCH /api/v1/nodes/<node>.
type Kube struct {
	Server string // https://host:port
	Node   string
	Token  string
	Client *http.Client
}

// InCluster builds a Kube labeler from the pod's environment
// (KUBERNETES_SERVICE_HOST/PORT) and service account files in saDir.
func InCluster(node, saDir string) (*Kube, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): give --label=none")
	}
	if node == "" {
		return nil, errors.New("no node name: set NODE_NAME from the downward API (spec.nodeName) or give --node")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("reading the service account token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", filepath.Join(saDir, "ca.crt"))
	}
	return &Kube{
		Server: "https://" + net.JoinHostPort(host, port),
		Node:   node,
		Token:  strings.TrimSpace(string(token)),
		Client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, nil
}

// LabelPatch is the merge patch that sets set and removes remove (a null
// value deletes a key in a JSON merge patch).
func LabelPatch(set map[string]string, remove []string) ([]byte, error) {
	labels := map[string]any{}
	for k, v := range set {
		labels[k] = v
	}
	for _, k := range remove {
		labels[k] = nil
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
}

// SetLabels patches the node.
func (k *Kube) SetLabels(ctx context.Context, set map[string]string, remove []string) error {
	body, err := LabelPatch(set, remove)
	if err != nil {
		return err
	}
	u := k.Server + "/api/v1/nodes/" + url.PathEscape(k.Node)
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("patching node %s: %w", k.Node, err)
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+k.Token)
	resp, err := k.Client.Do(req)
	if err != nil {
		return fmt.Errorf("patching node %s: %w", k.Node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("patching node %s: %s: %s", k.Node, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
