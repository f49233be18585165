package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestGuestMemorySamples(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meminfo.log")
	log := "2026-11-27T10:00:00.000000000Z stdout F 1000\n" +
		"2026-11-27T10:00:01.000000000Z stdout F 1200\n" +
		"2026-11-27T10:00:02.000000000Z stderr F ignored\n" +
		"2026-11-27T10:00:02.500000000Z stdout F 9000\n" +
		"2026-11-27T10:00:03.000000000Z stdout F 5000\n" +
		"2026-11-27T10:00:04.000000000Z stdout F 7000\n" +
		"2026-11-27T10:00:05.000000000Z stdout F 99999\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := readSamples(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 6 || s[2].used != 9000<<10 {
		t.Fatalf("samples: %+v", s)
	}
	at := func(sec float64) time.Time {
		return time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).Add(time.Duration(sec * float64(time.Second)))
	}
	// The pull from 0.5 s to 3.5 s: before is the 0 s sample; the window
	// holds 1, 2.5 and 3 s and ends with the first sample after it (4 s);
	// the 5 s one is left out.
	before, peak, n := memoryWindow(s, at(0.5), at(3.5))
	if before != 1000<<10 || peak != 9000<<10 || n != 4 {
		t.Errorf("window 0.5-3.5 s: before %d peak %d n %d", before>>10, peak>>10, n)
	}
	// The last sample of a short pull is the one after it.
	before, peak, n = memoryWindow(s, at(4.2), at(4.4))
	if before != 7000<<10 || peak != 99999<<10 || n != 1 {
		t.Errorf("window 4.2-4.4 s: before %d peak %d n %d", before>>10, peak>>10, n)
	}

	if err := os.WriteFile(path, []byte("2026-11-27T10:00:00Z stdout F lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSamples(path); err == nil {
		t.Error("a sample that is not a number was accepted")
	}
}
