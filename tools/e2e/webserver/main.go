// Command webserver stands in for the nginx and httpd images critest pulls:
// it serves a fixed page on a port, writes its PID to a file (critest reads
// /var/run/nginx.pid) and logs a banner to stdout (critest looks for "httpd"
// in the httpd container's log). The image names the binary after the server
// it replaces so `pidof nginx` finds it.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
)

func main() {
	if err := run(); err != nil {
		slog.Error("webserver", "err", err)
		os.Exit(1)
	}
}

func run() error {
	port := flag.Int("port", 80, "TCP port to serve on")
	addr := flag.String("addr", "", "address to serve on (empty: all addresses)")
	pidFile := flag.String("pidfile", "", "file to write the PID to (none when empty)")
	banner := flag.String("banner", "webserver", "line printed on start and served as the page")
	flag.Parse()
	if *pidFile != "" {
		if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("writing pid file: %w", err)
		}
	}
	// The banner is printed once the port listens, so a test that reads it
	// may connect at once.
	listen := net.JoinHostPort(*addr, strconv.Itoa(*port)) // ":80" for all addresses
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	fmt.Printf("%s: listening on %s\n", *banner, listen)
	page := []byte("<html><body>" + *banner + "</body></html>\n")
	return http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { //nolint:gosec // G114: a test server without timeouts
		_, _ = w.Write(page)
	}))
}
