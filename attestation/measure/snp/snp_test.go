package snp

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The expected values below are the published vectors gathered in the
// shared vector collection (snp.json, see testdata/README.md). Each row
// names its case as snp.json does and the upstream test it comes from.
// None of the SNP cases is marked DERIVED there: every value here is an
// upstream (or hardware-attested) value. The VMSA pages under
// testdata/sev-snp-measure/vmsa are pages sev-snp-measure dumped, the
// intermediate values (OVMF-only digest, hash table bytes) the upstream
// code's own.

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Ext(name) == ".gz" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func digestOf(t *testing.T, s string) Digest {
	t.Helper()
	var d Digest
	if n := copy(d[:], unhex(t, s)); n != DigestSize {
		t.Fatalf("digest %s: %d bytes", s, n)
	}
	return d
}

// fixtureSHA256 pins the fixture files' bytes (snp.json "files").
var fixtureSHA256 = map[string]string{
	"sev-snp-measure/ovmf_AmdSev_suffix.bin":                    "8f765dfabc127fc0a938a0744a3103ec15864d7d794eb4c398aa976b6d6ab16c",
	"sev-snp-measure/ovmf_OvmfX64_suffix.bin":                   "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da",
	"dstack/synthetic_snp_ovmf.bin":                             "a518a7020d85f0879caf0bb4ddd13277d6176de2e00da802d2df2e46d4cf7eb2",
	"dstack/sev_snp_report.bin":                                 "a20e02a2e8198894f3c4d0158276c5ae65e63b1908dd4540e058a2ea54d88d2e",
	"gce-tcb-verifier/clean_example_0x1000.bin":                 "47478af62c0a1b7beeadfaa3ede8ee05527242eec3476db94f5a718ef588eccf",
	"gce-tcb-verifier/clean_example_0x200000.bin.gz":            "47a603340d574eaa6b5511190923112c75b04f68175223682d572968188d2d27",
	"gce-tcb-verifier/sev_guid_table_only_0x1000.bin":           "d2797abd95d8c1f6dcde43486a9576298c121f5d3ff7f876b8fada9e4f3c2459",
	"sev-snp-measure/vmsa/sev_es_QEMU_EPYCv4_feat0x0_ap.bin":    "7ff723da33f39dedbe8336bb697e0a2f76471690074d5902e1a8177cd5312c95",
	"sev-snp-measure/vmsa/sev_es_QEMU_EPYCv4_feat0x0_bsp.bin":   "8295cef559b57130391d59605890ef93297720b48bef9a8c3c985b9c3fb0788c",
	"sev-snp-measure/vmsa/sev_snp_QEMU_EPYCv4_feat0x1_ap.bin":   "4ffee74d299a5d74748460fd6238d5cdbb7da2fe1c12476a9bf3c8ecdbdcd905",
	"sev-snp-measure/vmsa/sev_snp_QEMU_EPYCv4_feat0x1_bsp.bin":  "591598a62aa556861a392da67feab71a919975d97a579eb1df12503178c9cbb3",
	"sev-snp-measure/vmsa/sev_snp_QEMU_EPYCv4_feat0x21_ap.bin":  "9fe4cc44ca9c23819e83f4e2660f721344762076bb3b2c29ce029516aabd98b5",
	"sev-snp-measure/vmsa/sev_snp_QEMU_EPYCv4_feat0x21_bsp.bin": "b2588f97abfa82b893444537c17d4ae97a78eb0a5f78a4d844055d8d15be091a",
	"sev-snp-measure/vmsa/sev_snp_ec2_EPYCv4_feat0x1_bsp.bin":   "d6c9d0409668043e96874082e992eb1a08393f1ad6f3c1be450e51bc2cc66004",
	"sev-snp-measure/vmsa/sev_snp_ec2_EPYCv4_feat0x21_bsp.bin":  "bafab7d7eb960e5f43d197aeb539175b92652d4a458958626394766bb623faf4",
	"sev-snp-measure/vmsa/sev_snp_gce_nosig_feat0x1_ap.bin":     "e62b24c0430d685360090aa7362d89bc9009a43794cdd274a57abb8fada49344",
	"sev-snp-measure/vmsa/sev_snp_gce_nosig_feat0x1_bsp.bin":    "a2b1355de1e1f11159d4cfaa28a748c6d19f63b330a7cb09696eda0c5f2f8ab8",
}

func TestFixturesUnchanged(t *testing.T) {
	for name, want := range fixtureSHA256 {
		got := sha256.Sum256(readFixture(t, name))
		if hex.EncodeToString(got[:]) != want {
			t.Errorf("%s: sha256 %x, want %s", name, got, want)
		}
	}
}

const epycV4 = 0x800F12

// vcpu_sig_cases: sev-snp-measure tests/test_vcpu_types.py.
func TestVCPUSig(t *testing.T) {
	for _, tt := range []struct {
		name                    string
		family, model, stepping uint32
		want                    uint32
	}{
		{"test_cpu_sig_with_low_family", 14, 1, 2, 3602},
		{"test_cpu_sig_with_high_family", 23, 1, 2, 8392466},
	} {
		if got := VCPUSig(tt.family, tt.model, tt.stepping); got != tt.want {
			t.Errorf("%s: VCPUSig(%d, %d, %d) = %#x, want %#x", tt.name, tt.family, tt.model, tt.stepping, got, tt.want)
		}
	}
	// snp.json constants.cpu_sigs (sev-snp-measure constants.cpu_sigs).
	want := map[string]uint32{
		"EPYC": 8392466, "EPYC-v1": 8392466, "EPYC-v2": 8392466, "EPYC-IBPB": 8392466, "EPYC-v3": 8392466, "EPYC-v4": 8392466,
		"EPYC-Rome": 8589072, "EPYC-Rome-v1": 8589072, "EPYC-Rome-v2": 8589072, "EPYC-Rome-v3": 8589072,
		"EPYC-Milan": 10489617, "EPYC-Milan-v1": 10489617, "EPYC-Milan-v2": 10489617,
		"EPYC-Genoa": 10555152, "EPYC-Genoa-v1": 10555152, "EPYC-Turin": 11538176,
	}
	if len(CPUModels()) != len(want) {
		t.Errorf("CPUModels() = %v, want the %d models of cpu_sigs", CPUModels(), len(want))
	}
	for name, sig := range want {
		got, err := CPUModelSig(name)
		if err != nil || got != sig {
			t.Errorf("CPUModelSig(%q) = %#x, %v, want %#x", name, got, err, sig)
		}
	}
	if _, err := CPUModelSig("host"); err == nil {
		t.Error("CPUModelSig(host): no error")
	}
}

// gctx_cases.
func TestGCTX(t *testing.T) {
	t.Run("gce_TestUpdateData", func(t *testing.T) {
		// gce-tcb-verifier sev/sev_test.go::TestUpdateData
		data := make([]byte, 3*PageSize)
		copy(data, "LGTMLGTMLGTMLGTM")
		copy(data[len(data)-16:], "LGTMLGTMLGTMLGTM")
		var g GCTX
		if err := g.UpdateNormalPages(0, data); err != nil {
			t.Fatal(err)
		}
		if got, want := g.Digest(), digestOf(t, "cba1cd767c33b30f96271837dbbae4081a945464a5af397b9b0336b5d8759ee88cc6b62c05d915c4424a9ac5747437d4"); got != want {
			t.Errorf("ld = %x, want %x", got, want)
		}
	})
	t.Run("gce_TestZeroContentUpdateData", func(t *testing.T) {
		// gce-tcb-verifier sev/sev_test.go::TestZeroContentUpdateData
		var g GCTX
		if err := g.UpdateEmptyPages(PageZero, 0x9000, 3*PageSize); err != nil {
			t.Fatal(err)
		}
		if got, want := g.Digest(), digestOf(t, "4bfe18477ba370a50329da74b9621e721c4f29663176e08fbcf088a17c1bc45f133898b86d5082acbe202a6e9419808a"); got != want {
			t.Errorf("ld = %x, want %x", got, want)
		}
	})
	t.Run("dstack_gctx_update_is_deterministic_and_order_sensitive", func(t *testing.T) {
		// dstack dstack-mr/src/sev.rs::tests::gctx_update_is_deterministic_and_order_sensitive
		var g GCTX
		g.Update(PageNormal, 0x1000, sha512.Sum384([]byte("page")))
		if got, want := g.Digest(), digestOf(t, "3ebc1a70acc0bae5ae2788fae29a0371f983b19a68faf9843064f36040f58571ce5bb6bcdc9c361087073f8cffd92635"); got != want {
			t.Errorf("ld = %x, want %x", got, want)
		}
	})
	t.Run("dstack_ovmf_parser_matches_synthetic_footer_metadata_vector", func(t *testing.T) {
		// dstack dstack-mr/src/sev.rs::tests::ovmf_parser_matches_synthetic_footer_metadata_vector.
		// Its ASEV header's size field is 0: ParseMetadata must not bound
		// the items by it.
		fw := readFixture(t, "dstack/synthetic_snp_ovmf.bin")
		got, err := OVMFDigest(fw)
		if err != nil {
			t.Fatal(err)
		}
		if want := digestOf(t, "7c0f80f0a8d0ab1ee23fe763b255b8b210bb71113febcda60d76c00e84512f0cc141ffaa61be7bd22164736e85ec52d3"); got != want {
			t.Errorf("OVMF digest = %x, want %x", got, want)
		}
		if FirmwareGPA(len(fw)) != 4294963200 {
			t.Errorf("firmware GPA %#x", FirmwareGPA(len(fw)))
		}
		m, err := ParseMetadata(fw)
		if err != nil {
			t.Fatal(err)
		}
		want := Metadata{HashTableGPA: 16384, ResetEIP: 4294967280, Sections: []Section{
			{4096, 4096, SectionSNPSecMem}, {8192, 4096, SectionSNPSecrets}, {12288, 4096, SectionCPUID}, {16384, 4096, SectionSNPKernelHashes},
		}}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("ParseMetadata = %+v, want %+v", m, want)
		}
	})
}

// amdSevSections is the SEV metadata of ovmf_AmdSev_suffix.bin
// (snp.json derived.metadata_sections).
var amdSevSections = []Section{
	{8388608, 36864, SectionSNPSecMem},
	{8429568, 12288, SectionSNPSecMem},
	{8441856, 4096, SectionSNPSecrets},
	{8445952, 4096, SectionCPUID},
	{8450048, 4096, SectionSVSMCAA},
	{8454144, 4096, SectionSNPKernelHashes},
	{8458240, 61440, SectionSNPSecMem},
}

func TestParseMetadata(t *testing.T) {
	for _, tt := range []struct {
		file string
		want Metadata
	}{
		{"sev-snp-measure/ovmf_AmdSev_suffix.bin", Metadata{HashTableGPA: 8457216, ResetEIP: 8433668, Sections: amdSevSections}},
		{"gce-tcb-verifier/clean_example_0x1000.bin", Metadata{ResetEIP: 4278190335, Sections: []Section{
			{4278194176, 4096, SectionSNPSecMem}, {4278202368, 4096, SectionCPUID}, {4278206464, 4096, SectionSNPSecrets}}}},
	} {
		m, err := ParseMetadata(readFixture(t, tt.file))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if !reflect.DeepEqual(m, tt.want) {
			t.Errorf("%s: ParseMetadata = %+v, want %+v", tt.file, m, tt.want)
		}
	}
	m, err := ParseMetadata(readFixture(t, "sev-snp-measure/ovmf_OvmfX64_suffix.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if m.HashTableGPA != 0 || m.HasKernelHashes() || m.ResetEIP != 8433668 {
		t.Errorf("OvmfX64: %+v, want no hash table, no kernel-hashes section, reset EIP 0x80b004", m)
	}
	if _, err := ParseMetadata(make([]byte, PageSize)); !errors.Is(err, ErrNoFooter) {
		t.Errorf("ParseMetadata(zero page) = %v, want ErrNoFooter", err)
	}
}

// The hash table bytes of test_snp_ovmf_hash_full_default
// (derived.sev_hashes_table_hex): empty kernel and initrd, append
// "console=ttyS0 loglevel=7".
func TestHashTable(t *testing.T) {
	h := HashKernel(nil, nil, "console=ttyS0 loglevel=7")
	got := h.Table()
	want := unhex(t, "06d63894224fc94cb479a793d411fd21a800d82dd09720bd944caa78e7714d36ab2a3200321c8eec6a77bad179511397f913a083067ad8cb737bb260aacbfe8df70fc50a31f7ba442f3ad74b9af141e29169781d3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8553794e74dd2ab7f42b835d5b172d2045b3200e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8550000000000000000")
	if !bytes.Equal(got[:], want) {
		t.Errorf("table\n%x\nwant\n%x", got, want)
	}
	if c := HashKernel(nil, nil, ""); hex.EncodeToString(c.Cmdline[:]) != "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d" {
		t.Errorf("empty cmdline hash %x, want sha256(\"\\0\")", c.Cmdline)
	}
}

// The VMSA pages sev-snp-measure dumped (derived.vmsa_pages).
func TestVMSAPages(t *testing.T) {
	const resetEIP = 8433668 // ovmf_AmdSev_suffix.bin's SEV-ES reset block
	for _, tt := range []struct {
		file     string
		vmm      VMMType
		eip, sig uint32
		features uint64
	}{
		{"sev_snp_QEMU_EPYCv4_feat0x21_bsp.bin", VMMQEMU, BSPEIP, epycV4, 0x21},
		{"sev_snp_QEMU_EPYCv4_feat0x21_ap.bin", VMMQEMU, resetEIP, epycV4, 0x21},
		{"sev_snp_QEMU_EPYCv4_feat0x1_bsp.bin", VMMQEMU, BSPEIP, epycV4, 0x1},
		{"sev_snp_QEMU_EPYCv4_feat0x1_ap.bin", VMMQEMU, resetEIP, epycV4, 0x1},
		{"sev_es_QEMU_EPYCv4_feat0x0_bsp.bin", VMMQEMU, BSPEIP, epycV4, 0},
		{"sev_es_QEMU_EPYCv4_feat0x0_ap.bin", VMMQEMU, resetEIP, epycV4, 0},
		{"sev_snp_ec2_EPYCv4_feat0x21_bsp.bin", VMMEC2, BSPEIP, epycV4, 0x21},
		{"sev_snp_ec2_EPYCv4_feat0x1_bsp.bin", VMMEC2, BSPEIP, epycV4, 0x1},
		{"sev_snp_gce_nosig_feat0x1_bsp.bin", VMMGCE, BSPEIP, 0, 0x1},
		{"sev_snp_gce_nosig_feat0x1_ap.bin", VMMGCE, resetEIP, 0, 0x1},
	} {
		want := readFixture(t, "sev-snp-measure/vmsa/"+tt.file)
		got := VMSA(tt.vmm, tt.eip, tt.sig, tt.features)
		if !bytes.Equal(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("%s: first difference at %#x: %#x, want %#x", tt.file, i, got[i], want[i])
					break
				}
			}
		}
	}
}

// emptyKernel is sev-snp-measure's kernel=/dev/null, initrd=/dev/null.
func emptyKernel(appendLine string) *KernelHashes {
	h := HashKernel(nil, nil, appendLine)
	return &h
}

// launch_digest_cases of mode SEV_SNP, in snp.json order. The SNP:SVSM
// cases (test_snp_svsm_4_vcpus, test_snp_svsm_2_vcpus) are not here: the
// package does not implement SVSM launches.
func TestSNPLaunchDigest(t *testing.T) {
	const ovmfHash = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74"
	for _, tt := range []struct {
		name, source string
		ovmf         string
		// seed: the case passes snp_ovmf_hash instead of measuring the file.
		seed     bool
		vcpus    int
		vmm      VMMType
		features uint64
		sig      uint32
		kernel   *KernelHashes
		want     string
		wantErr  error
	}{
		{"test_snp_ovmf_hash_gen_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", true, 1, VMMQEMU, 0x21, epycV4, emptyKernel(""), "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198", nil},
		{"test_snp_ovmf_hash_gen_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", true, 1, VMMQEMU, 0x1, epycV4, emptyKernel(""), "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5", nil},
		{"test_snp_ovmf_hash_full_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", true, 1, VMMQEMU, 0x21, epycV4, emptyKernel("console=ttyS0 loglevel=7"), "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977", nil},
		{"test_snp_ovmf_hash_full_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", true, 1, VMMQEMU, 0x1, epycV4, emptyKernel("console=ttyS0 loglevel=7"), "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa", nil},
		{"test_snp_ec2_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMEC2, 0x21, epycV4, emptyKernel(""), "0ce9ccc06bab55eebe8abc234f3df6514883977a68a591b71052498ab52b2f1aa415db338033946ef93aa8278c0d67fb", nil},
		{"test_snp_ec2_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMEC2, 0x1, epycV4, emptyKernel(""), "0883bd0eeb716e65b7b977a321c278d1e51b33b5c655fab985443bbcc65c086b9c15e8a0bd8811050dec7e24964e5056", nil},
		{"test_snp_gce_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMGCE, 0x1, epycV4, emptyKernel(""), "5da7106cf14cf46b1725ebab123eb9e53bd46a1e9f400cd0c08e7827b04b688ea8b4e403c8404efed4397ea5d5d0722e", nil},
		{"test_snp_gce_with_multiple_vcpus_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 4, VMMGCE, 0x1, epycV4, emptyKernel(""), "5c5debf100fc339f90276e761ee1f1658d08922c3b20e2a2e6c7a6c3370b2452a15a00eae11886a93d6fd1e7ab81e29d", nil},
		{"test_snp_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMQEMU, 0x21, epycV4, emptyKernel("console=ttyS0 loglevel=7"), "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977", nil},
		{"test_snp_guest_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMQEMU, 0x1, epycV4, emptyKernel("console=ttyS0 loglevel=7"), "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa", nil},
		{"test_snp_without_kernel_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMQEMU, 0x21, epycV4, nil, "e1e1ca029dd7973ab9513295be68198472dcd4fc834bd9af9b63f6e8a1674dbf281a9278a4a2ebe0eed9f22adbcd0e2b", nil},
		{"test_snp_without_kernel_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 1, VMMQEMU, 0x1, epycV4, nil, "19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d", nil},
		{"test_snp_with_multiple_vcpus_default", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 4, VMMQEMU, 0x21, epycV4, emptyKernel(""), "4953b1fb416fa874980e8442b3706d345926d5f38879134e00813c5d7abcbe78eafe7b422907be0b4698e2414a631942", nil},
		{"test_snp_with_multiple_vcpus_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_AmdSev_suffix.bin", false, 4, VMMQEMU, 0x1, epycV4, emptyKernel(""), "5061fffb019493a903613d56d54b94912a1a2f9e4502385f5c194616753720a92441310ba6c4933de877c36e23046ad5", nil},
		{"test_snp_with_ovmfx64_without_default", "sev-snp-measure", "sev-snp-measure/ovmf_OvmfX64_suffix.bin", false, 1, VMMQEMU, 0x21, epycV4, nil, "28797ae0afaba4005a81e629acebfb59e6687949d6be44007cd5506823b0dd66f146aaae26ff291eed7b493d8a64c385", nil},
		{"test_snp_with_ovmfx64_without_kernel_feature_snp_only", "sev-snp-measure", "sev-snp-measure/ovmf_OvmfX64_suffix.bin", false, 1, VMMQEMU, 0x1, epycV4, nil, "da0296de8193586a5512078dcd719eccecbd87e2b825ad4148c44f665dc87df21e5b49e21523a9ad993afdb6a30b4005", nil},
		// Upstream: "Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section".
		{"test_snp_with_ovmfx64_and_kernel_should_fail", "sev-snp-measure", "sev-snp-measure/ovmf_OvmfX64_suffix.bin", false, 1, VMMQEMU, 0x21, epycV4, emptyKernel(""), "", ErrNoKernelHashes},
		// gce-tcb-verifier: sev.LaunchDigest(&LaunchOptions{Vcpus: N, Product: SEV_PRODUCT_MILAN}, fw).
		{"gce_TestLaunchDigest_CleanExample_0x1000", "gce-tcb-verifier sev/sev_test.go::TestLaunchDigest", "gce-tcb-verifier/clean_example_0x1000.bin", false, 1, VMMGCE, 0x1, 0, nil, "301a56e0014065ed60a3c848ea0d3d0b2aa46f4bfea9ddeadbc602146d4c087851ab2c15d573f8b2a42ecc82d74c9db8", nil},
		{"gce_CleanExampleMeasurement_2MiB", "gce-tcb-verifier verify/verifytest/verifytest.go::CleanExampleMeasurement", "gce-tcb-verifier/clean_example_0x200000.bin.gz", false, 1, VMMGCE, 0x1, 0, nil, "20ec0dbd1c0a26d184a6f11ec5a796d68ec03c9d101bdd84c03f3d9cbbc4a292a9fad098edacfa04da0da58f20be885e", nil},
		{"gce_TestUnsignedSnp_4vmsas", "gce-tcb-verifier sev/sev_test.go::TestUnsignedSnp", "gce-tcb-verifier/sev_guid_table_only_0x1000.bin", false, 4, VMMGCE, 0x1, 0, nil, "1a8cd8039cdcdcd1ec9800ca215ba5cbbed437697debf0b2fc1a9b873f1eb15f82dc7d5cf246dbee4df1bb9d3b6c7a16", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fw := readFixture(t, tt.ovmf)
			m, err := ParseMetadata(fw)
			if err != nil {
				t.Fatal(err)
			}
			seed, err := OVMFDigest(fw)
			if err != nil {
				t.Fatal(err)
			}
			if tt.seed {
				// The case passes --snp-ovmf-hash; it must be the file's.
				if want := digestOf(t, ovmfHash); seed != want {
					t.Fatalf("OVMF digest %x, want %x", seed, want)
				}
			}
			got, err := Launch{Firmware: seed, Metadata: m, Kernel: tt.kernel, VCPUs: tt.vcpus, VCPUSig: tt.sig, GuestFeatures: tt.features, VMM: tt.vmm}.Digest()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("(%s) err = %v, want %v", tt.source, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got[:]) != tt.want {
				t.Errorf("(%s) digest %x, want %s", tt.source, got, tt.want)
			}
		})
	}
}

// launch_digest_cases of modes SEV_ES and SEV (sev-snp-measure).
func TestSEVLaunchDigest(t *testing.T) {
	amd := readFixture(t, "sev-snp-measure/ovmf_AmdSev_suffix.bin")
	x64 := readFixture(t, "sev-snp-measure/ovmf_OvmfX64_suffix.bin")
	noInitrd := HashKernel(nil, nil, "") // initrd and append not given: sha256(""), sha256("\0")
	for _, tt := range []struct {
		name    string
		es      bool
		fw      []byte
		vcpus   int
		kernel  *KernelHashes
		want    string
		wantErr error
	}{
		{"test_seves", true, amd, 1, emptyKernel(""), "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c", nil},
		{"test_seves_with_multiple_vcpus", true, amd, 4, emptyKernel(""), "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91", nil},
		// Upstream: "Kernel specified but OVMF doesn't support kernel/initrd/cmdline measurement".
		{"test_seves_with_ovmfx64_and_kernel_should_fail", true, x64, 1, emptyKernel(""), "", ErrNoKernelHashes},
		{"test_sev", false, amd, 1, emptyKernel("console=ttyS0 loglevel=7"), "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff", nil},
		{"test_sev_with_kernel_without_initrd_and_append", false, amd, 1, &noInitrd, "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898", nil},
		{"test_sev_with_ovmfx64_and_kernel_should_fail", false, x64, 1, emptyKernel(""), "", ErrNoKernelHashes},
		// The digest of a plain SEV launch without a kernel is the file's sha256.
		{"test_sev_with_ovmfx64_without_kernel", false, x64, 1, nil, "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMetadata(tt.fw)
			if err != nil {
				t.Fatal(err)
			}
			var got [32]byte
			if tt.es {
				got, err = SEVESDigest(tt.fw, m, tt.kernel, tt.vcpus, epycV4)
			} else {
				got, err = SEVDigest(tt.fw, m, tt.kernel)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got[:]) != tt.want {
				t.Errorf("(sev-snp-measure tests/test_guest.py) digest %x, want %s", got, tt.want)
			}
		})
	}
}

// literal_input_cases (dstack dstack-mr/src/sev.rs tests): the firmware
// is given as its OVMF-only digest and its metadata, the kernel and
// initrd as hashes, the sections in the given order.
func TestDstackLiteralInputs(t *testing.T) {
	literal := func(t *testing.T, ovmfHash, kernelHash, initrdHash, cmdline string, hashTable, resetEIP uint32, sections []Section) Launch {
		h := HashKernel(nil, nil, cmdline)
		copy(h.Kernel[:], unhex(t, kernelHash))
		copy(h.Initrd[:], unhex(t, initrdHash))
		return Launch{
			Firmware: digestOf(t, ovmfHash),
			Metadata: Metadata{HashTableGPA: hashTable, ResetEIP: resetEIP, Sections: sections},
			Kernel:   &h, VCPUs: 2, VCPUSig: epycV4, GuestFeatures: 1, VMM: VMMQEMU,
		}
	}
	t.Run("dstack_measurement_vector_does_not_drift", func(t *testing.T) {
		l := literal(t,
			"444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444",
			"5555555555555555555555555555555555555555555555555555555555555555",
			"6666666666666666666666666666666666666666666666666666666666666666",
			"console=ttyS0 dstack.rootfs_hash=3333333333333333333333333333333333333333333333333333333333333333",
			8392704, 4294967280,
			[]Section{{1048576, 8192, SectionSNPSecMem}, {8388608, 4096, SectionSNPKernelHashes}, {8454144, 4096, SectionSNPSecrets}, {8519680, 4096, SectionCPUID}})
		got, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if want := digestOf(t, "88b48404819692fd2a5068f1a07bf1973bbcaa1314adc670705f9388762a759faf889f8e2c71fe1ec892554415257960"); got != want {
			t.Errorf("digest %x, want %x", got, want)
		}
	})
	t.Run("dstack_real_fixture_recomputes_measurement", func(t *testing.T) {
		// Hardware-attested: a live dstack CVM on EPYC Milan (2 vCPUs,
		// EPYC-v4, features 0x1); the digest must equal MEASUREMENT
		// (offset 0x90) of the AMD-signed report it produced.
		l := literal(t,
			"ffb57e393469a497c0e3b07bd1c97d8611e555f464d14491837665893ac642b263a71f9507ff100a847897fe0c3f8c6f",
			"dd9ea274ce9a07090b22e8284b0c841b65c021c2d15ca57d0f16731089dd226c",
			"5f844c4a2ca5a3d0711b3db38293b21ba929bb8e0b3c5bc1a779a57f69221c19",
			"console=ttyS0 init=/init panic=1 net.ifnames=0 biosdevname=0 mce=off oops=panic pci=noearly pci=nommconf random.trust_cpu=y random.trust_bootloader=n tsc=reliable no-kvmclock dstack.rootfs_hash=ca5adaef0ac3a36108035925763b48a5818f634e700fbaab561d419fd30d7121 dstack.rootfs_size=490713088",
			8457216, 8433668,
			[]Section{
				{8388608, 36864, SectionSNPSecMem}, {8429568, 12288, SectionSNPSecMem}, {8441856, 4096, SectionSNPSecrets},
				{8445952, 4096, SectionCPUID}, {8450048, 4096, SectionSVSMCAA}, {8458240, 61440, SectionSNPSecMem},
				{8454144, 4096, SectionSNPKernelHashes},
			})
		got, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		want := digestOf(t, "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d")
		if got != want {
			t.Errorf("digest %x, want %x", got, want)
		}
		report := readFixture(t, "dstack/sev_snp_report.bin")
		if !bytes.Equal(report[0x90:0x90+DigestSize], got[:]) {
			t.Errorf("report MEASUREMENT %x, computed %x", report[0x90:0x90+DigestSize], got)
		}
	})
}

func TestLaunchRefusals(t *testing.T) {
	fw := readFixture(t, "sev-snp-measure/ovmf_AmdSev_suffix.bin")
	m, _ := ParseMetadata(fw)
	if _, err := (Launch{Metadata: m, VCPUs: 0}).Digest(); err == nil {
		t.Error("0 vCPUs: no error")
	}
	noReset := m
	noReset.ResetEIP = 0
	if _, err := (Launch{Metadata: noReset, VCPUs: 2}).Digest(); err == nil {
		t.Error("2 vCPUs without a reset block: no error")
	}
	if _, err := OVMFDigest(make([]byte, 100)); err == nil {
		t.Error("OVMFDigest of 100 bytes: no error")
	}
	bad := m
	bad.Sections = append([]Section(nil), m.Sections...)
	bad.Sections[0].Type = 9
	if _, err := (Launch{Metadata: bad, VCPUs: 1}).Digest(); err == nil {
		t.Error("unknown section type: no error")
	}
}
