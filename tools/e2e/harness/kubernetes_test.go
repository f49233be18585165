package harness

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// The cluster's certificates chain to its CA with the names and usages the
// components check: the API server's serving certificate covers the
// addresses clients dial, and client certificates carry the user and group
// RBAC and the Node authorizer see.
func TestClusterCertificates(t *testing.T) {
	c := &Cluster{Dir: t.TempDir(), env: &Env{Address: "/e/containerd.sock"}}
	if err := os.MkdirAll(filepath.Join(c.Dir, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.writeFiles(); err != nil {
		t.Fatal(err)
	}
	load := func(name string) *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(c.Dir, "pki", name+".crt"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s.crt holds no PEM block", name)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	roots := x509.NewCertPool()
	roots.AddCert(load("ca"))
	for _, tc := range []struct {
		name  string
		usage x509.ExtKeyUsage
		host  string // for serving certificates
		cn    string
		org   string
	}{
		{name: "apiserver", usage: x509.ExtKeyUsageServerAuth, host: "127.0.0.1"},
		{name: "apiserver", usage: x509.ExtKeyUsageServerAuth, host: serviceIP},
		{name: "apiserver", usage: x509.ExtKeyUsageServerAuth, host: "kubernetes.default.svc"},
		{name: "kubelet", usage: x509.ExtKeyUsageServerAuth, host: NodeIP},
		{name: "admin", usage: x509.ExtKeyUsageClientAuth, org: "system:masters"},
		{name: "kubelet-client", usage: x509.ExtKeyUsageClientAuth, cn: "system:node:" + NodeName, org: "system:nodes"},
		{name: "controller-manager", usage: x509.ExtKeyUsageClientAuth, cn: "system:kube-controller-manager"},
		{name: "scheduler", usage: x509.ExtKeyUsageClientAuth, cn: "system:kube-scheduler"},
		{name: "apiserver-kubelet-client", usage: x509.ExtKeyUsageClientAuth, org: "system:masters"},
	} {
		cert := load(tc.name)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s for %q: %v", tc.name, tc.host, err)
		}
		if tc.cn != "" && cert.Subject.CommonName != tc.cn {
			t.Errorf("%s: CN %q, want %q", tc.name, cert.Subject.CommonName, tc.cn)
		}
		if tc.org != "" && (len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != tc.org) {
			t.Errorf("%s: O %v, want %s", tc.name, cert.Subject.Organization, tc.org)
		}
	}
	if ip := net.ParseIP(NodeIP); ip.IsLoopback() || ip == nil {
		t.Errorf("NodeIP %s: the kubelet refuses a loopback node IP", NodeIP)
	}
	for _, f := range []string{"pki/sa.key", "pki/sa.pub", "admin.kubeconfig", "kubelet.kubeconfig", "kubelet.yaml"} {
		if _, err := os.Stat(filepath.Join(c.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// The kubelet's config is YAML whose keys the kubelet knows and which turn
// off what would touch the shared host: its QoS cgroups go below the
// environment's own cgroupRoot.
func TestKubeletConfig(t *testing.T) {
	c := &Cluster{Dir: "/e/k8s", env: &Env{Address: "/e/containerd.sock"}, CgroupRoot: kubeCgroupName(42, "/tmp/veil-e2e-123")}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(c.kubeletConfig()), &cfg); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"kind": "KubeletConfiguration", "cgroupsPerQOS": true, "cgroupRoot": "/veil-e2e-k8s-42-123", "failCgroupV1": false, "failSwapOn": false,
		"localStorageCapacityIsolation": false, "podLogsDir": "/e/k8s/pod-logs",
		"containerRuntimeEndpoint": "unix:///e/containerd.sock", "address": NodeIP,
	} {
		if cfg[key] != want {
			t.Errorf("kubelet config %s = %v, want %v", key, cfg[key], want)
		}
	}
	if e, ok := cfg["enforceNodeAllocatable"].([]any); !ok || len(e) != 0 {
		t.Errorf("kubelet config enforceNodeAllocatable = %v, want [] (no reservation taken from the shared host)", cfg["enforceNodeAllocatable"])
	}
}
