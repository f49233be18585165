package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-memory OCI registry (go-containerregistry's) listening
// on 127.0.0.1 inside the environment's network namespace, where containerd
// pulls from it over plain HTTP. Code outside the namespace pushes through
// Transport, which calls the handler directly.
//
// Guests pull from a second listener, over TLS (image/ pulls over HTTPS
// from anything but loopback): GuestHost is the CNI bridge's address
// (BridgeIP) and a port, with a certificate for that address whose PEM is
// GuestRootPEM. The init-data of guest-pull pods names GuestHost as the
// mirror of Host and GuestRootPEM as a TLS root (GuestImageTable).
type Registry struct {
	Host      string // "127.0.0.1:PORT", as reached from inside the namespace
	Transport http.RoundTripper
	// GuestHost is "10.88.0.1:PORT", as reached from a pod's guest.
	GuestHost string
	// GuestRootPEM is the certificate GuestHost serves (self-signed).
	GuestRootPEM string
	srv          *http.Server
	guestSrv     *http.Server
}

// BridgeIP is the CNI bridge's address in the environment's namespace
// (the gateway of CNIConfig's 10.88.0.0/16), where guests reach the host.
const BridgeIP = "10.88.0.1"

// StartRegistry starts a registry listening inside ns.
func StartRegistry(ns *NetNS, logw io.Writer) (*Registry, error) {
	h := registry.New(registry.Logger(log.New(logw, "registry: ", log.LstdFlags)))
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("listening for the registry: %w", err)
	}
	srv := &http.Server{Handler: h, ErrorLog: log.New(logw, "registry: ", log.LstdFlags)}
	go srv.Serve(ln) //nolint:errcheck // returns when Close is called
	r := &Registry{Host: ln.Addr().String(), Transport: handlerTransport{h}, srv: srv}
	if err := r.serveGuests(ns, h, logw); err != nil {
		srv.Close()
		return nil, err
	}
	return r, nil
}

// serveGuests listens on every address of the namespace (the bridge
// appears with the first pod) with a TLS certificate for BridgeIP.
func (r *Registry) serveGuests(ns *NetNS, h http.Handler, logw io.Writer) error {
	cert, certPEM, err := selfSigned(BridgeIP)
	if err != nil {
		return err
	}
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "0.0.0.0:0")
		return err
	}); err != nil {
		return fmt.Errorf("listening for guests' registry pulls: %w", err)
	}
	r.guestSrv = &http.Server{Handler: h, ErrorLog: log.New(logw, "registry (guests): ", log.LstdFlags),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go r.guestSrv.ServeTLS(ln, "", "") //nolint:errcheck // returns when Close is called
	r.GuestHost = net.JoinHostPort(BridgeIP, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	r.GuestRootPEM = string(certPEM)
	return nil
}

// selfSigned makes a one-day certificate for ip.
func selfSigned(ip string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generating the registry key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "veil e2e registry"},
		IPAddresses:           []net.IP{net.ParseIP(ip)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("creating the registry certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// GuestImageTable is the rest of an init-data [image] table after its
// policy: GuestHost as the mirror of Host, trusted through GuestRootPEM.
// It ends the document's [image] table (it opens [image.mirrors]).
func (r *Registry) GuestImageTable() string {
	return fmt.Sprintf("tls_roots = '''\n%s'''\n\n[image.mirrors]\n%q = [%q]\n", r.GuestRootPEM, r.Host, r.GuestHost)
}

// Close stops serving.
func (r *Registry) Close() error {
	if r.guestSrv != nil {
		r.guestSrv.Close()
	}
	return r.srv.Close()
}

// handlerTransport answers HTTP requests by calling a handler in-process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	in := req.Clone(req.Context())
	if in.Body == nil {
		in.Body = http.NoBody // a server never hands a handler a nil body
	}
	t.h.ServeHTTP(rec, in)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
