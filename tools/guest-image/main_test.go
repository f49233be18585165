package main

import "testing"

func TestSourceDateEpoch(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"", 0, false},
		{"1700000000", 1700000000, false},
		{"-1", 0, true},
		{"4294967296", 0, true},
		{"yesterday", 0, true},
	} {
		got, err := sourceDateEpoch(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("sourceDateEpoch(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
