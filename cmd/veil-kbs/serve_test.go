package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs/client"
)

// TestServeTLSDevMode runs the broker as the binary wires it (TLS, dev
// mode, store on disk), configures it with the admin commands and lets a
// sample guest fetch a secret.
func TestServeTLSDevMode(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	store := filepath.Join(dir, "store")
	a, stop := startServe(t, "serve", []string{"--store", store, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile, "--dev"})
	url := "https://" + a.Public
	admin := []string{"--url", "http://" + a.Admin, "--admin-token-file", filepath.Join(store, "admin-token"), "--dev"}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, args := range [][]string{
		append(append([]string{"policy", "set"}, admin...), write("p.json", `{"sample":{}}`)),
		append(append([]string{"resource-policy", "set"}, admin...), write("r.json", `{"rules":[{"resource":"dev/key/*","tees":["sample"]}]}`)),
		append(append([]string{"resource", "set"}, admin...), "dev/key/one", write("k", "the-secret")),
	} {
		if err := run(args); err != nil {
			t.Fatalf("veil-kbs %v: %v", args[:2], err)
		}
	}
	caPEM, _ := os.ReadFile(certFile)
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n")
	d := initdata.Digest(doc)
	c, err := client.New(client.Config{URL: url, Attester: evidence.NewSample(d[:], slog.New(slog.DiscardHandler)), InitData: doc, RootCAsPEM: caPEM})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Resource(context.Background(), "dev/key/one")
	if err != nil || string(got) != "the-secret" {
		t.Fatalf("Resource = %q, %v", got, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("serve after shutdown: %v", err)
	}
}

func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "veil-kbs test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestAdminMTLS: an admin listener on a public address needs a client
// CA, and then serves only clients holding a certificate from it.
func TestAdminMTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "admin ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	cliKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cliDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "operator"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}, ca, &cliKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cliKeyDER, _ := x509.MarshalECPrivateKey(cliKey)
	caFile, cliCert, cliKeyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cli.pem"), filepath.Join(dir, "cli-key.pem")
	for f, b := range map[string]*pem.Block{caFile: {Type: "CERTIFICATE", Bytes: caDER}, cliCert: {Type: "CERTIFICATE", Bytes: cliDER}, cliKeyFile: {Type: "EC PRIVATE KEY", Bytes: cliKeyDER}} {
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store := filepath.Join(dir, "store")
	a, stop := startServe(t, "serve", []string{"--store", store, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--admin-client-ca", caFile,
		"--tls-cert", certFile, "--tls-key", keyFile})
	base := []string{"--url", "https://" + a.Admin, "--admin-token-file", filepath.Join(store, "admin-token"), "--ca", certFile}
	var out bytes.Buffer
	if err := adminCommand("resource", append([]string{"list"}, append(base, "--client-cert", cliCert, "--client-key", cliKeyFile)...), &out); err != nil {
		t.Fatalf("resource list with a client certificate: %v", err)
	}
	if err := adminCommand("resource", append([]string{"list"}, base...), &out); err == nil {
		t.Fatal("admin API served a client without a certificate")
	}
	// The public listener serves no admin path.
	if err := adminCommand("resource", append([]string{"list", "--url", "https://" + a.Public}, base[2:]...), &out); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("admin path on the public listener = %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// startServe runs serve with args until stop, which ends it and returns
// serve's error; the test fails when serve ends before it is ready.
func startServe(t *testing.T, what string, args []string) (a addrs, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, args, ready) }()
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("%s: %v", what, err)
	}
	return a, func() error {
		cancel()
		return <-done
	}
}
