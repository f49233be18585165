package harness

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// ServeOnBridge serves h over plain HTTP on a free port of the
// environment's network namespace, where guests reach it at BridgeIP (an
// in-process veil-kbs, for example). It returns the URL guests use and a
// stop function that closes the server and waits for it.
func (e *Env) ServeOnBridge(h http.Handler) (url string, stop func(), err error) {
	var ln net.Listener
	if err := e.NetNS.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "0.0.0.0:0")
		return err
	}); err != nil {
		return "", nil, fmt.Errorf("listening on the bridge: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns on Close
	}()
	stop = func() {
		_ = srv.Close()
		<-done
	}
	return "http://" + net.JoinHostPort(BridgeIP, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), stop, nil
}
