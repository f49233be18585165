package main

import (
	"strings"
	"unicode/utf8"
)

// sideBySide lays texts out in columns under their titles, each column as
// wide as its longest line, separated by " | ".
func sideBySide(titles, texts []string) string {
	cols := make([][]string, len(texts))
	widths := make([]int, len(texts))
	rows := 0
	for i, t := range texts {
		cols[i] = append([]string{titles[i], strings.Repeat("-", utf8.RuneCountInString(titles[i]))},
			strings.Split(strings.TrimRight(t, "\n"), "\n")...)
		for _, l := range cols[i] {
			widths[i] = max(widths[i], utf8.RuneCountInString(l))
		}
		rows = max(rows, len(cols[i]))
	}
	var b strings.Builder
	for r := range rows {
		var line strings.Builder
		for i, col := range cols {
			cell := ""
			if r < len(col) {
				cell = col[r]
			}
			if i > 0 {
				line.WriteString(" | ")
			}
			line.WriteString(cell)
			if i < len(cols)-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell)))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	return b.String()
}
