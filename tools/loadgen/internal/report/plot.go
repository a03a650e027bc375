package report

import (
	"fmt"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePNG draws three panels against seconds since the run began: API create latency
// p50/p99 per second, black-box lag p50/p99 per second, and the outbox backlog and
// stream pending count.
func (r *Results) WritePNG(path string) error {
	lat := plot.New()
	lat.Title.Text = "API POST /v1/todos latency per second (ms)"
	lag := plot.New()
	lag.Title.Text = "commit to visible in MongoDB, black-box (ms)"
	back := plot.New()
	back.Title.Text = "outbox backlog and stream pending"
	for _, p := range []*plot.Plot{lat, lag, back} {
		p.X.Label.Text = "seconds since start"
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
	}

	var latP50, latP99, lagP50, lagP99 plotter.XYs
	for _, ph := range r.phases() {
		if ph == nil {
			continue
		}
		for _, pt := range ph.Series {
			latP50 = append(latP50, plotter.XY{X: ph.StartedSec + pt.T, Y: max(pt.P50, 0.01)})
			latP99 = append(latP99, plotter.XY{X: ph.StartedSec + pt.T, Y: max(pt.P99, 0.01)})
		}
		for _, pt := range ph.LagSeries {
			lagP50 = append(lagP50, plotter.XY{X: ph.StartedSec + pt.T, Y: max(pt.P50, 0.01)})
			lagP99 = append(lagP99, plotter.XY{X: ph.StartedSec + pt.T, Y: max(pt.P99, 0.01)})
		}
	}
	var backlog, pending plotter.XYs
	for _, t := range r.Timeline {
		backlog = append(backlog, plotter.XY{X: t.T, Y: float64(t.Backlog)})
		pending = append(pending, plotter.XY{X: t.T, Y: float64(t.Pending)})
	}
	// Log scales show both ends of a latency tail; they need data above zero.
	for _, p := range []struct {
		plot *plot.Plot
		xys  plotter.XYs
	}{{lat, latP50}, {lag, lagP50}} {
		if len(p.xys) > 0 {
			p.plot.Y.Scale = plot.LogScale{}
			p.plot.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		}
	}
	if err := scatter(lat, series{"p50", latP50}, series{"p99", latP99}); err != nil {
		return err
	}
	if err := scatter(lag, series{"p50", lagP50}, series{"p99", lagP99}); err != nil {
		return err
	}
	// Log ticks are labelled at powers of ten only: widen each axis to whole decades,
	// or a range within one decade shows no labels.
	for _, p := range []*plot.Plot{lat, lag} {
		if _, ok := p.Y.Scale.(plot.LogScale); ok {
			p.Y.Min = math.Pow(10, math.Floor(math.Log10(p.Y.Min)))
			p.Y.Max = math.Pow(10, math.Ceil(math.Log10(p.Y.Max)))
		}
	}
	if err := plotutil.AddLines(back, "outbox backlog", backlog, "stream pending", pending); err != nil {
		return fmt.Errorf("plot backlog: %w", err)
	}

	img := vgimg.New(12*vg.Inch, 12*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 3, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6), PadY: vg.Points(12)}
	plots := [][]*plot.Plot{{lat}, {lag}, {back}}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(out); err != nil {
		out.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return out.Close()
}

type series struct {
	name string
	xys  plotter.XYs
}

// scatter adds named point series: per-second percentiles are too ragged for lines
// across the gaps between phases.
func scatter(p *plot.Plot, ss ...series) error {
	for i, sr := range ss {
		if len(sr.xys) == 0 {
			continue
		}
		s, err := plotter.NewScatter(sr.xys)
		if err != nil {
			return fmt.Errorf("plot %s: %w", sr.name, err)
		}
		s.GlyphStyle.Color = plotutil.Color(i)
		s.GlyphStyle.Radius = vg.Points(1.5)
		p.Add(s)
		p.Legend.Add(sr.name, s)
	}
	return nil
}
