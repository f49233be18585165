package harness

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Registry is an in-memory OCI registry (go-containerregistry's) listening
// on 127.0.0.1 inside the environment's network namespace, where containerd
// pulls from it over plain HTTP. Code outside the namespace pushes through
// Transport, which calls the handler directly.
type Registry struct {
	Host      string // "127.0.0.1:PORT", as reached from inside the namespace
	Transport http.RoundTripper
	srv       *http.Server
}

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
	return &Registry{Host: ln.Addr().String(), Transport: handlerTransport{h}, srv: srv}, nil
}

// Close stops serving.
func (r *Registry) Close() error { return r.srv.Close() }

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
