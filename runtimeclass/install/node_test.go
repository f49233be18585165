package install

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
	shimconfig "github.com/veil-runtime/veil/shim/config"
)

// snpHost is veil check on an SEV-SNP host.
func snpHost() hostcheck.Report {
	return hostcheck.Report{
		TEE: "snp", Problems: []string{},
		HostTEE: hostcheck.HostTEE{SEVSNP: true}, QEMU: hostcheck.QEMU{SNP: true},
		KVM: hostcheck.KVM{Hardware: true, Modules: []string{"kvm_amd"}},
	}
}

// veil-snp and veil-tdx are installed only where the check found their
// TEE, unless --handlers names them (then they are noted, not labelled).
func TestSelectHandlers(t *testing.T) {
	tcg := hostcheck.Report{TEE: "none", Problems: []string{}, KVM: hostcheck.KVM{Note: "no /dev/kvm"}}
	for _, tc := range []struct {
		name      string
		r         hostcheck.Report
		requested []string
		explicit  bool
		want      []string
		notes     []string // substrings, one per note
	}{
		{"no TEE, default", tcg, Handlers, false, []string{"veil", "veil-dev"},
			[]string{"veil-snp not installed: veil check found no SNP on this node (tee none: host kernel without SEV-SNP (kvm_amd sev_snp); QEMU without sev-snp-guest; no usable KVM (no /dev/kvm))", "veil-tdx not installed"}},
		{"SNP host, default", snpHost(), Handlers, false, []string{"veil", "veil-dev", "veil-snp"}, []string{"veil-tdx not installed"}},
		{"no TEE, veil-snp asked for", tcg, []string{"veil", "veil-snp"}, true, []string{"veil", "veil-snp"},
			[]string{"veil-snp installed as --handlers asks, but veil check found no SNP", "not labelled veil.io/tee=snp"}},
		{"SNP host, only veil", snpHost(), []string{"veil"}, true, []string{"veil"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, notes := SelectHandlers(tc.r, tc.requested, tc.explicit)
			if !slices.Equal(got, tc.want) {
				t.Errorf("handlers %v, want %v", got, tc.want)
			}
			all := strings.Join(notes, "\n")
			for _, n := range tc.notes {
				if !strings.Contains(all, n) {
					t.Errorf("notes %q lack %q", notes, n)
				}
			}
			if tc.notes == nil && len(notes) != 0 {
				t.Errorf("notes %q, want none", notes)
			}
		})
	}
}

// veil.io/runtime=true only when veil check passed; tee=snp only when,
// besides, the SNP handler can run.
func TestLabelsFor(t *testing.T) {
	failing := hostcheck.Report{TEE: "none", Problems: []string{"QEMU: qemu-system-x86_64 not found"}}
	for _, tc := range []struct {
		name       string
		r          hostcheck.Report
		teeProblem string
		set        map[string]string
		remove     []string
		note       string
	}{
		{"passes, no TEE", hostcheck.Report{TEE: "none", Problems: []string{}}, "", map[string]string{LabelRuntime: "true", LabelTEE: "none"}, nil, ""},
		{"passes, SNP", snpHost(), "", map[string]string{LabelRuntime: "true", LabelTEE: "snp"}, nil, ""},
		{"SNP without firmware", snpHost(), "firmware missing", map[string]string{LabelRuntime: "true", LabelTEE: "none"}, nil, "labelled veil.io/tee=none, not snp: firmware missing"},
		{"check fails", failing, "", map[string]string{}, []string{LabelRuntime, LabelTEE}, "not labelled veil.io/runtime=true: veil check found: QEMU: qemu-system-x86_64 not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, remove, notes := LabelsFor(tc.r, tc.teeProblem)
			if !maps.Equal(set, tc.set) || !slices.Equal(remove, tc.remove) {
				t.Errorf("set %v remove %v, want %v %v", set, remove, tc.set, tc.remove)
			}
			if all := strings.Join(notes, "\n"); tc.note != "" && !strings.Contains(all, tc.note) || tc.note == "" && all != "" {
				t.Errorf("notes %q, want %q", notes, tc.note)
			}
		})
	}
}

// Install labels from the check run after the files are in place: a node
// whose check fails loses veil.io/runtime (an earlier install set it), and
// an SNP node gets tee=snp only once veil-snp's firmware exists.
func TestInstallLabelsFromTheCheck(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, &orig, source(t, "v1"))
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if n.lb.labels[LabelRuntime] != "true" || n.lb.labels[LabelTEE] != "none" {
		t.Fatalf("labels after a passing check: %v", n.lb.labels)
	}

	n.opts.Check = func(context.Context) hostcheck.Report {
		return hostcheck.Report{TEE: "none", Problems: []string{"guest image: vmlinuz: sha256 x, manifest says y"}}
	}
	rec, err := Install(ctx, n.opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.lb.labels[LabelRuntime]; ok || len(rec.Labels) != 0 {
		t.Fatalf("labels after a failing check: node %v, record %v; want no veil label", n.lb.labels, rec.Labels)
	}

	n.opts.Check = func(context.Context) hostcheck.Report { return snpHost() }
	n.opts.Handlers = []string{"veil", "veil-snp"}
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if n.lb.labels[LabelTEE] != "none" {
		t.Fatalf("tee label %q on an SNP node without veil-snp's firmware, want none", n.lb.labels[LabelTEE])
	}
	fw := filepath.Join(n.root, DefaultPrefix, "share/veil/OVMF-snp.fd")
	if err := os.WriteFile(fw, []byte("firmware"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if n.lb.labels[LabelTEE] != "snp" || n.lb.labels[LabelRuntime] != "true" {
		t.Fatalf("labels on an SNP node with the firmware: %v, want runtime=true tee=snp", n.lb.labels)
	}
}

// The admin's overrides live in each handler config's drop-in directory:
// install never writes there (a reinstall keeps them byte for byte), reads
// them as the shim does (guest pull turned off there takes veil-dev off the
// veil snapshotter), refuses a broken one before containerd sees it, and
// uninstall leaves them.
func TestAdminDropInsKept(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, &orig, source(t, "v1"))
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if drop := n.read(t, DefaultDropIn); !strings.Contains(drop, `"veil-dev"]`+"\n  runtime_type") || strings.Count(drop, `snapshotter = "veil"`) != 3 {
		t.Fatalf("drop-in without overrides: want veil-dev, veil-snp, veil-tdx on the veil snapshotter:\n%s", drop)
	}
	devConfig := HandlerConfigPath(DefaultPrefix, "veil-dev")
	admin := filepath.Join(n.root, shimconfig.DropInDir(devConfig), "50-admin.toml")
	override := "# the admin's\n[hypervisor]\nmemory_mib = 1024\n\n[confidential]\nguest_pull = false\n"
	if err := os.MkdirAll(filepath.Dir(admin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admin, []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if got := n.read(t, shimconfig.DropInDir(devConfig)+"/50-admin.toml"); got != override {
		t.Fatalf("admin override after reinstall = %q, want it unchanged", got)
	}
	if drop := n.read(t, DefaultDropIn); strings.Count(drop, `snapshotter = "veil"`) != 2 {
		t.Fatalf("drop-in with veil-dev's guest_pull = false: veil-dev still on the veil snapshotter:\n%s", drop)
	}
	if !strings.Contains(n.read(t, devConfig), shimconfig.DropInDir(devConfig)) {
		t.Error("the handler config does not tell where overrides go")
	}

	if err := os.WriteFile(admin, []byte("[hypervisor]\nmemroy_mib = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	restarts := n.rs.n
	if _, err := Install(ctx, n.opts); err == nil || !strings.Contains(err.Error(), "memroy_mib") || !strings.Contains(err.Error(), "veil-dev") {
		t.Fatalf("install over a broken override: %v, want a refusal naming the handler and the key", err)
	}
	if n.rs.n != restarts {
		t.Error("containerd restarted over a broken override")
	}
	if err := os.WriteFile(admin, []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(admin); err != nil || string(got) != override {
		t.Fatalf("admin override after uninstall: %q, %v; want it left", got, err)
	}
}
