package service

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
)

// confidentialState is a sample-TEE agent state that has accepted doc
// (empty: no document, the default policy).
func confidentialState(t *testing.T, doc string) *attest.State {
	t.Helper()
	params := map[string]string{attest.TEEParam: attest.Sample}
	if doc != "" {
		sum := initdata.Digest([]byte(doc))
		params[attest.InitDataDigestParam] = hex.EncodeToString(sum[:])
	}
	st, err := attest.New(attest.Config{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetInitData(context.Background(), []byte(doc)); err != nil {
		t.Fatal(err)
	}
	return st
}

// runWriter creates and starts c1, a container that writes 3 MiB to
// stdout (three times the agent's buffer) and exits 4, calls started (if
// any) and returns c1's WaitProcess answer.
func runWriter(t *testing.T, fx *fixture, started func()) (*api.WaitProcessResponse, error) {
	t.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(fx.shared, "c1", "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := []byte(`{"process":{"args":["/bin/sh","-c","head -c 3145728 /dev/zero; echo end; exit 4"]}}`)
	if _, err := fx.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: "c1", Spec: spec, Rootfs: &api.Storage{Driver: "shared", Source: "c1/rootfs"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.client.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if started != nil {
		started()
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return fx.client.Process.WaitProcess(wctx, &api.WaitProcessRequest{ContainerId: "c1"})
}

// Regression (issue 12, kata#10680): under a confidential policy without
// allow_read_output the host may not read a container's output, so the
// agent drains it: a container writing more than its 1 MiB buffer runs to
// its exit and WaitProcess reports it, where it used to block forever on
// its next write.
func TestOutputNobodyMayReadDoesNotBlockTheContainer(t *testing.T) {
	fx := serveAttest(t, confidentialState(t, ""))
	w, err := runWriter(t, fx, nil)
	if err != nil {
		t.Fatalf("WaitProcess for a container whose output nobody may read: %v (blocked on a full pipe?)", err)
	}
	if w.ExitStatus != 4 || w.ExitedAt == nil {
		t.Fatalf("WaitProcess = %v, want exit status 4 with a time", w)
	}
	// Even past the policy interceptor, the drained output is not served.
	_, err = fx.client.Process.ReadStdout(context.Background(), &api.ReadStreamRequest{ContainerId: "c1"})
	wantCode(t, "ReadStdout of drained output", err, codes.PermissionDenied)
}

// With allow_read_output the output is kept for the host, with its
// backpressure: the writer waits for the reader.
func TestOutputReadableUnderAllowReadOutput(t *testing.T) {
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[agent]\npolicy = '''\nallow_read_output = true\n'''\n"
	fx := serveAttest(t, confidentialState(t, doc))
	ctx := context.Background()
	read := make(chan int, 1)
	w, err := runWriter(t, fx, func() {
		go func() {
			n := 0
			for {
				r, err := fx.client.Process.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1"})
				if err != nil || len(r.Data) == 0 {
					read <- n
					return
				}
				n += len(r.Data)
			}
		}()
	})
	if err != nil || w.ExitStatus != 4 {
		t.Fatalf("WaitProcess = %v, %v", w, err)
	}
	if n := <-read; n != 3<<20+len("end\n") {
		t.Fatalf("host read %d bytes of stdout, want %d", n, 3<<20+len("end\n"))
	}
}
