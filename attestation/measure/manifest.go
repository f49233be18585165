package measure

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ManifestFile is the guest image's manifest (tools/guest-image), next to
// its kernel and initrd.
const ManifestFile = "manifest.json"

// Manifest is the part of the guest image manifest measure reads: each
// artifact's digest, and the values the image build recorded.
type Manifest struct {
	Artifacts map[string]struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"artifacts"`
	// Measurements are the values `make guest-image` recorded for the
	// handlers' default inputs, by handler name.
	Measurements map[string]Recorded `json:"measurements,omitempty"`
}

// Recorded is what the image build computed for one handler.
type Recorded struct {
	// Inputs are the handler's default inputs (paths as installed).
	Inputs Inputs `json:"inputs"`
	// FirmwareSHA256 is the firmware the SNP values were computed with.
	FirmwareSHA256 string `json:"firmware_sha256,omitempty"`
	// SNP are the launch digests per vCPU model (QEMU model names; with
	// -cpu host a node's value is that of the model whose family, model
	// and stepping its CPU has).
	SNP map[string]string `json:"snp,omitempty"`
	// TDX are the TDX values at the handler's base memory size (RTMR 1
	// follows the VM's memory; RTMR 0 is not computed).
	TDX *TDXValues `json:"tdx,omitempty"`
	// NotComputable says why no hardware value was recorded.
	NotComputable string `json:"not_computable,omitempty"`
}

// ReadManifest reads the manifest of the guest image whose kernel is at
// kernel (the manifest sits beside it). ok is false when there is none.
func ReadManifest(kernel string) (m Manifest, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, fmt.Errorf("reading the guest image manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, false, fmt.Errorf("reading the guest image manifest beside %s: %w", kernel, err)
	}
	return m, true, nil
}

// Check compares the kernel and initrd r measured with the artifacts the
// manifest lists under their file names: a mismatch means the files are
// not the image the manifest describes.
func (m Manifest) Check(r Result) error {
	for _, f := range []struct{ path, sum string }{{r.Inputs.Kernel, r.KernelSHA256}, {r.Inputs.Initrd, r.InitrdSHA256}} {
		if f.path == "" {
			continue
		}
		a, ok := m.Artifacts[filepath.Base(f.path)]
		if !ok {
			return fmt.Errorf("guest image manifest lists no artifact %s", filepath.Base(f.path))
		}
		if a.SHA256 != f.sum {
			return fmt.Errorf("guest image file %s: sha256 %s, the manifest says %s", f.path, f.sum, a.SHA256)
		}
	}
	return nil
}
