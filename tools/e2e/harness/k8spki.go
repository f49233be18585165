package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the single-node cluster's certificate authority: one CA signs every
// serving and client certificate (ECDSA P-256, valid one day). Files are
// written into dir as NAME.crt and NAME.key.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  crypto.Signer
}

// newPKI creates the CA (ca.crt, ca.key) in dir.
func newPKI(dir string) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the cluster CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "veil-e2e-kubernetes-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the cluster CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the cluster CA: %w", err)
	}
	p := &pki{dir: dir, cert: cert, key: key}
	return p, p.write("ca", der, key)
}

// certRequest is one certificate the CA issues.
type certRequest struct {
	name string // file name without extension
	cn   string // common name: the user name the API server sees
	orgs []string
	ips  []net.IP
	dns  []string
	// server and client select the extended key usages.
	server, client bool
}

// issue writes r.name.crt and r.name.key signed by the CA.
func (p *pki) issue(r certRequest) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the key of %s: %w", r.name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return fmt.Errorf("drawing a serial number for %s: %w", r.name, err)
	}
	var usage []x509.ExtKeyUsage
	if r.server {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	if r.client {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.cn, Organization: r.orgs},
		NotBefore:    p.cert.NotBefore,
		NotAfter:     p.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		IPAddresses:  r.ips,
		DNSNames:     r.dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, key.Public(), p.key)
	if err != nil {
		return fmt.Errorf("signing the certificate of %s: %w", r.name, err)
	}
	return p.write(r.name, der, key)
}

// serviceAccountKey writes sa.key and sa.pub, the key pair the API server
// signs service account tokens with.
func (p *pki) serviceAccountKey() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the service account key: %w", err)
	}
	if err := writeKey(filepath.Join(p.dir, "sa.key"), key); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("encoding the service account public key: %w", err)
	}
	return writePEM(filepath.Join(p.dir, "sa.pub"), "PUBLIC KEY", pub, 0o644)
}

func (p *pki) write(name string, der []byte, key crypto.Signer) error {
	if err := writePEM(filepath.Join(p.dir, name+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(p.dir, name+".key"), key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
