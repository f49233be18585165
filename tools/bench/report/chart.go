package report

import (
	"fmt"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/palette"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteChart draws the run as one PNG at path, a panel for each part the
// run measured: where a veil pod start's time goes (stacked bars of the
// segment medians, next to runc's and the bare boot's medians), PSS per
// idle pod, the concurrency curve, and the pull benchmark's times.
func WriteChart(path string, r *Result) error {
	var panels []*plot.Plot
	if len(r.Starts) > 0 || len(r.BareBoots) > 0 {
		p, err := phasesPlot(r)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(r.Memory) > 0 {
		p, err := memoryPlot(r)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(r.Concurrency) > 0 {
		p, err := concurrencyPlot(r)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(r.Pulls) > 0 {
		p, err := pullPlot(r)
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return fmt.Errorf("charting %s: the run has no samples", path)
	}
	w, h := 9*vg.Inch, vg.Length(len(panels))*14*vg.Inch/3
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(10), PadBottom: vg.Points(10), PadX: vg.Points(10), PadY: vg.Points(20)}
	grid := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating chart: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing chart %s: %w", path, err)
	}
	return f.Close()
}

func phasesPlot(r *Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Pod start, runp to first output (medians)"
	p.Y.Label.Text = "seconds"
	p.Legend.Top = true
	p.Legend.Left = false
	width := vg.Points(50)
	// x: 0 veil (stacked segments), 1 runc, 2 bare qemu boot.
	// One distinct colour per segment (plotutil's seven repeat).
	colors := palette.Rainbow(len(Segments)+1, palette.Red, palette.Magenta, 0.6, 0.9, 1).Colors()
	var below *plotter.BarChart
	if Summarize(r.StartTotals("veil")).N > 0 {
		for i, m := range r.SegmentMedians("veil") {
			b, err := plotter.NewBarChart(plotter.Values{m, 0, 0}, width)
			if err != nil {
				return nil, fmt.Errorf("charting phases: %w", err)
			}
			b.Color = colors[i]
			b.LineStyle.Width = 0
			if below != nil {
				b.StackOn(below)
			}
			below = b
			p.Add(b)
			p.Legend.Add(Segments[i].Name, b)
		}
	}
	others, err := plotter.NewBarChart(plotter.Values{0, Summarize(r.StartTotals("runc")).Median, Summarize(r.BareReady()).Median}, width)
	if err != nil {
		return nil, fmt.Errorf("charting phases: %w", err)
	}
	others.Color = colors[len(Segments)]
	if below != nil {
		others.StackOn(below)
	}
	p.Add(others)
	p.Legend.Add("runc total / bare boot", others)
	p.NominalX("veil", "runc", "bare qemu -kernel")
	// Room on the right for the legend.
	p.X.Max = 4.5
	return p, nil
}

func memoryPlot(r *Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Host memory (PSS) per idle pod"
	p.Y.Label.Text = "MiB"
	var idle []int
	var handlers []string
	for _, m := range r.Memory {
		if !slices.Contains(idle, m.Pods) {
			idle = append(idle, m.Pods)
		}
		if !slices.Contains(handlers, m.Handler) {
			handlers = append(handlers, m.Handler)
		}
	}
	slices.Sort(idle)
	width := vg.Points(30)
	for i, h := range handlers {
		vals := make(plotter.Values, len(idle))
		for _, m := range r.Memory {
			if m.Handler == h {
				vals[slices.Index(idle, m.Pods)] = m.PerPod() / (1 << 20)
			}
		}
		b, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, fmt.Errorf("charting memory: %w", err)
		}
		b.Color = plotutil.Color(i)
		b.Offset = vg.Length(float64(i)-float64(len(handlers)-1)/2) * width
		p.Add(b)
		p.Legend.Add(h, b)
	}
	names := make([]string, len(idle))
	for i, n := range idle {
		names[i] = fmt.Sprintf("%d idle pods", n)
	}
	if len(names) > 0 {
		p.NominalX(names...)
	}
	p.Legend.Top = true
	return p, nil
}

func concurrencyPlot(r *Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Pods started at once: wall time until the last one's first output"
	p.X.Label.Text = "pods"
	p.Y.Label.Text = "seconds"
	var handlers []string
	for _, c := range r.Concurrency {
		if !slices.Contains(handlers, c.Handler) {
			handlers = append(handlers, c.Handler)
		}
	}
	for i, h := range handlers {
		var xys plotter.XYs
		for _, c := range r.Concurrency {
			if c.Handler == h {
				xys = append(xys, plotter.XY{X: float64(c.N), Y: c.Wall})
			}
		}
		slices.SortFunc(xys, func(a, b plotter.XY) int { return int(a.X - b.X) })
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("charting concurrency: %w", err)
		}
		l.Color, s.Color = plotutil.Color(i), plotutil.Color(i)
		p.Add(l, s)
		p.Legend.Add(h, l, s)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	return p, nil
}

func pullPlot(r *Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Pull of a %d MiB image (medians)", r.Config.Pull.MiB)
	p.Y.Label.Text = "seconds"
	var vals plotter.Values
	var names []string
	for _, k := range PullKinds {
		if s := r.SummarizePulls(k[0], k[1]); s.Time.N > 0 {
			vals = append(vals, s.Time.Median)
			names = append(names, k[0]+" "+k[1])
		}
	}
	b, err := plotter.NewBarChart(vals, vg.Points(50))
	if err != nil {
		return nil, fmt.Errorf("charting pulls: %w", err)
	}
	b.Color = plotutil.Color(0)
	p.Add(b)
	p.NominalX(names...)
	return p, nil
}
