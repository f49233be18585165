package main

import "testing"

func TestSideBySide(t *testing.T) {
	for _, tc := range []struct {
		name          string
		titles, texts []string
		want          string
	}{
		{
			name:   "one column",
			titles: []string{"runc"},
			texts:  []string{"a\nbb\n"},
			want:   "runc\n----\na\nbb\n",
		},
		{
			name:   "uneven columns",
			titles: []string{"runc", "veil"},
			texts:  []string{"kernel: 6.18\nMem: 24106", "kernel: 6.12.107\nMem: 480\nextra"},
			want: "runc         | veil\n" +
				"----         | ----\n" +
				"kernel: 6.18 | kernel: 6.12.107\n" +
				"Mem: 24106   | Mem: 480\n" +
				"             | extra\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sideBySide(tc.titles, tc.texts); got != tc.want {
				t.Errorf("sideBySide =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
