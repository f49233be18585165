package install

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLabelPatch(t *testing.T) {
	b, err := LabelPatch(NodeLabels("snp"), []string{"veil.io/old"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"labels":{"veil.io/old":null,"veil.io/runtime":"true","veil.io/tee":"snp"}}}`
	if string(b) != want {
		t.Fatalf("patch %s, want %s", b, want)
	}
}

// InCluster reads the service account the way a pod has it, and SetLabels
// sends one merge patch for this node with the token, over TLS checked
// against the cluster CA.
func TestKubeSetLabels(t *testing.T) {
	var got struct {
		method, path, ctype, auth string
		body                      map[string]any
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path = r.Method, r.URL.EscapedPath()
		got.ctype, got.auth = r.Header.Get("Content-Type"), r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &got.body)
		if got.auth != "Bearer tok-123" {
			http.Error(w, `{"kind":"Status","message":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"kind":"Node"}`))
	}))
	defer srv.Close()
	sa := t.TempDir()
	os.WriteFile(filepath.Join(sa, "token"), []byte("tok-123\n"), 0o600)
	os.WriteFile(filepath.Join(sa, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	u, _ := url.Parse(srv.URL)
	t.Setenv("KUBERNETES_SERVICE_HOST", u.Hostname())
	t.Setenv("KUBERNETES_SERVICE_PORT", u.Port())

	k, err := InCluster("node-a", sa)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.SetLabels(context.Background(), NodeLabels("none"), nil); err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodPatch || got.path != "/api/v1/nodes/node-a" || got.ctype != "application/merge-patch+json" {
		t.Fatalf("request %s %s %s", got.method, got.path, got.ctype)
	}
	labels := got.body["metadata"].(map[string]any)["labels"].(map[string]any)
	if labels[LabelRuntime] != "true" || labels[LabelTEE] != "none" || len(labels) != 2 {
		t.Fatalf("labels sent %v", labels)
	}

	k.Token = "wrong"
	if err := k.SetLabels(context.Background(), nil, []string{LabelTEE}); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("unauthorised patch: %v, want a 401 error", err)
	}

	if _, err := InCluster("", sa); err == nil || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Fatalf("no node name: %v", err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := InCluster("node-a", sa); err == nil || !strings.Contains(err.Error(), "--label=none") {
		t.Fatalf("outside a pod: %v", err)
	}
}

func TestChooseRestarter(t *testing.T) {
	withSystemd := t.TempDir()
	os.MkdirAll(filepath.Join(withSystemd, "run/systemd/system"), 0o755)
	without := t.TempDir()
	for _, tc := range []struct {
		mode, cmd, root string
		want, err       string
	}{
		{"auto", "", withSystemd, "systemd unit containerd.service", ""},
		{"auto", "rc-service containerd restart", without, "command rc-service containerd restart", ""},
		{"auto", "", without, "", "does not run systemd"},
		{"none", "", without, "not restarted (--restart=none)", ""},
		{"systemd", "", without, "systemd unit containerd.service", ""},
		{"command", "", without, "", "needs --restart-command"},
		{"reboot", "", without, "", "want auto, systemd, command or none"},
	} {
		r, err := ChooseRestarter(tc.mode, tc.cmd, "", tc.root)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s/%q: err %v, want %q", tc.mode, tc.cmd, err, tc.err)
			}
			continue
		}
		if err != nil || r.String() != tc.want {
			t.Errorf("%s/%q: %v %v, want %s", tc.mode, tc.cmd, r, err, tc.want)
		}
	}
}

func TestCommandRestarter(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "restarted")
	if err := (Command{Shell: "echo yes > " + marker}).Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "yes\n" {
		t.Fatalf("hook did not run: %q %v", b, err)
	}
	err := (Command{Shell: "echo broken >&2; exit 3"}).Restart(context.Background())
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("failing hook: %v", err)
	}
}
