//go:build vm

package vmtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/shim/config"
)

// TestMeasureVeilDev runs `veil measure` on the real guest image and the
// veil-dev handler config as `veil install` writes it (with a handler
// init-data document), boots a pod VM from that same config the way the
// shim does (config.Config.VM), and checks that
//
//   - the QEMU process runs with the -kernel, -initrd and -append that
//     veil measure printed, and those files hash to what it printed;
//   - the guest's sample evidence reports the init-data digest veil measure
//     printed: the agent accepts the document only when its digest equals
//     the one its (sample) TEE reports, and returns that digest.
func TestMeasureVeilDev(t *testing.T) {
	prefix := t.TempDir()
	share := filepath.Join(prefix, "share", "veil")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range install.GuestFiles {
		src, err := filepath.Abs(guestFile(n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, filepath.Join(share, n)); err != nil {
			t.Fatal(err)
		}
	}
	doc := []byte(confidentialDoc)
	docPath := filepath.Join(prefix, "initdata.toml")
	if err := os.WriteFile(docPath, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(string(install.HandlerConfig(prefix, "veil-dev")), "[confidential]\n", "[confidential]\ninitdata = \""+docPath+"\"\n", 1)
	cfgPath := install.HandlerConfigPath(prefix, "veil-dev")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}

	// veil measure, the binary.
	veil := filepath.Join(t.TempDir(), "veil")
	if out, err := exec.Command("go", "build", "-o", veil, "../../cmd/veil").CombinedOutput(); err != nil {
		t.Fatalf("building veil: %v\n%s", err, out)
	}
	out, err := exec.Command(veil, "measure", "--handler", "veil-dev", "--prefix", prefix, "--json").Output()
	if err != nil {
		t.Fatalf("veil measure: %v", err)
	}
	var r measure.Result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("veil measure --json: %v\n%s", err, out)
	}
	sum := sha256.Sum256(doc)
	if r.Inputs.InitDataDigest != hex.EncodeToString(sum[:]) {
		t.Fatalf("veil measure init-data digest %q, want sha256 of the handler's document %x", r.Inputs.InitDataDigest, sum)
	}
	text, err := exec.Command(veil, "measure", "--handler", "veil-dev", "--prefix", prefix).Output()
	if err != nil || !strings.Contains(string(text), "manifest.json lists this kernel and initrd") {
		t.Fatalf("veil measure (text): %v\n%s", err, text)
	}

	// The pod VM the shim would start for this handler.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "veil-vmtest-measure-")
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
	vmCfg := cfg.VM(sum[:], cfg.Hypervisor.VCPUs, cfg.Hypervisor.MemoryMiB)
	vmCfg.ID, vmCfg.StateDir, vmCfg.SharedDir = "measure", v.state, v.share
	if v.q, err = qemu.New(vmCfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := v.q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := v.q.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v.client = api.NewClient(conn)
	if _, err := v.client.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
		t.Fatalf("waiting for the agent: %v\nconsole:\n%s", err, v.console())
	}

	// QEMU's own argv: what the driver launched.
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(v.q.PID()) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	arg := func(flag string) string {
		i := slices.Index(argv, flag)
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("QEMU runs without %s: %q", flag, argv)
		}
		return argv[i+1]
	}
	if got := arg("-append"); got != r.Inputs.Append {
		t.Errorf("QEMU -append %q\nveil measure     %q", got, r.Inputs.Append)
	}
	for _, f := range []struct{ flag, sum string }{{"-kernel", r.KernelSHA256}, {"-initrd", r.InitrdSHA256}} {
		b, err := os.ReadFile(arg(f.flag))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != f.sum {
			t.Errorf("QEMU %s %s: sha256 %x, veil measure %s", f.flag, arg(f.flag), h, f.sum)
		}
	}

	// The sample evidence's init-data digest is the one measured.
	resp, err := v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc})
	if err != nil {
		t.Fatalf("SetInitData (the evidence's digest is not veil measure's %s?): %v\nconsole:\n%s", r.Inputs.InitDataDigest, err, v.console())
	}
	if resp.GetTee() != "sample" || resp.GetDigest() != r.Inputs.InitDataDigest {
		t.Errorf("guest reports tee %q, init-data digest %q; veil measure printed %q", resp.GetTee(), resp.GetDigest(), r.Inputs.InitDataDigest)
	}
	if !bytes.Contains(text, []byte(r.Inputs.InitDataDigest)) {
		t.Errorf("text output lacks the init-data digest:\n%s", text)
	}
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
}
