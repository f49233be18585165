//go:build vm

package vmtest

import (
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
)

// bootSample boots a veil-dev guest: the sample TEE with digest as the
// init-data digest bound at launch, exactly the kernel parameters the shim
// writes for a veil-dev pod (shim/confidential.go).
func bootSample(t *testing.T, id string, digest [32]byte) *vm {
	t.Helper()
	root, err := os.MkdirTemp("", "veil-vmtest-"+id+"-")
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{root: root, state: filepath.Join(root, "state"), share: filepath.Join(root, "share")}
	t.Cleanup(func() { v.destroy() })
	for _, d := range []string{v.state, v.share} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.boot(context.Background(), hypervisor.Config{
		ID: id, StateDir: v.state,
		Kernel: guestFile("vmlinux"), Initrd: guestFile("initrd.img"),
		KernelArgs: []string{"veil.tee=sample", "veil.initdata_digest=" + hex.EncodeToString(digest[:])},
		VCPUs:      1, MemoryMiB: 512, SharedDir: v.share,
		TEE: hypervisor.TEEConfig{Kind: hypervisor.TEESample, InitDataDigest: digest[:]},
	}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	return v
}

const confidentialDoc = `version = "0.1.0"
algorithm = "sha256"

[broker]
url = "http://10.0.2.2:8080"

[agent]
policy = '''
allow_host_share = true
'''
`

// TestConfidentialSampleInitDataAndPolicy boots the real agent as a
// veil-dev guest: before init-data nothing but health is served; the
// document whose digest was bound at launch is accepted and its policy
// (host share allowed, exec and log reading denied) enforced; a swapped
// document is refused and locks the agent down. The broker round trip from
// inside the guest needs pod networking and is covered by the agent's
// unit test against an in-process veil-kbs (guest-agent/attest).
func TestConfidentialSampleInitDataAndPolicy(t *testing.T) {
	doc := []byte(confidentialDoc)
	digest := initdata.Digest(doc)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()

	t.Run("accepted document, policy enforced", func(t *testing.T) {
		v := bootSample(t, "conf-ok", digest)
		sandbox := &api.CreateSandboxRequest{SandboxId: "conf-ok", Storages: []*api.Storage{{Driver: "9p", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared"}}}
		_, err := v.client.Sandbox.CreateSandbox(ctx, sandbox)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule init-data") {
			t.Fatalf("CreateSandbox before init-data: %v", err)
		}
		resp, err := v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc})
		if err != nil {
			t.Fatalf("SetInitData: %v\nconsole:\n%s", err, v.console())
		}
		if resp.GetTee() != "sample" || resp.GetDigest() != hex.EncodeToString(digest[:]) {
			t.Fatalf("SetInitData = %+v", resp)
		}
		if _, err := v.client.Sandbox.CreateSandbox(ctx, sandbox); err != nil {
			t.Fatalf("CreateSandbox with the host share the policy allows: %v", err)
		}
		_, err = v.client.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: []byte(`{"args":["sh"],"cwd":"/"}`)})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule allow_exec") {
			t.Fatalf("ExecProcess under a policy without allow_exec: %v", err)
		}
		_, err = v.client.Process.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c1", Len: 10})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule allow_read_output") {
			t.Fatalf("ReadStdout under a policy without allow_read_output: %v", err)
		}
		if !strings.Contains(v.console(), "INSECURE sample evidence") {
			t.Errorf("the guest console does not mark the sample TEE as insecure:\n%s", v.console())
		}
		if err := v.shutdown(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("swapped document refused, agent locked down", func(t *testing.T) {
		v := bootSample(t, "conf-swap", digest)
		swapped := []byte(strings.Replace(confidentialDoc, "allow_host_share = true", "allow_host_share = true\nallow_exec = true", 1))
		_, err := v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: swapped})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "the host changed the document") {
			t.Fatalf("SetInitData(swapped): %v", err)
		}
		_, err = v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "locked down") {
			t.Fatalf("SetInitData(right document) after the refusal: %v", err)
		}
		_, err = v.client.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1"})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "locked down") {
			t.Fatalf("ExecProcess after the refusal: %v", err)
		}
		if _, err := v.client.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{}); err != nil {
			t.Fatalf("GuestDetails stays served: %v", err)
		}
		if err := v.shutdown(); err != nil {
			t.Fatal(err)
		}
	})
}
