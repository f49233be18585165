package evidence

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// Device and configfs paths the TEE guest drivers expose.
const (
	sevGuestDevice = "/dev/sev-guest"
	tdxGuestDevice = "/dev/tdx_guest"
	tsmReportDir   = "/sys/kernel/config/tsm/report"
)

// Detect returns the attester for the TEE this guest runs in: SEV-SNP when
// go-sev-guest finds a report interface (configfs-tsm with the sev_guest
// provider, or /dev/sev-guest), else TDX when /dev/tdx_guest exists and
// configfs-tsm is mounted. It never falls back to sample evidence: that is
// chosen explicitly, for veil-dev.
func Detect(log *slog.Logger) (Attester, error) {
	if snp, err := OpenSNP(log); err == nil {
		return snp, nil
	}
	if exists(tdxGuestDevice) {
		if !exists(tsmReportDir) {
			return nil, fmt.Errorf("tdx guest without configfs-tsm: mount configfs at /sys/kernel/config (%s missing)", tsmReportDir)
		}
		return OpenTDX(log)
	}
	return nil, errors.New("no TEE found: no SEV-SNP report interface (" + tsmReportDir + " with provider sev_guest, or " + sevGuestDevice + ") and no " + tdxGuestDevice)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
