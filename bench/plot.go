package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

var (
	colorP50      = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	colorP99      = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	colorMax      = color.RGBA{R: 160, G: 160, B: 160, A: 255}
	colorAcked    = color.RGBA{R: 44, G: 160, B: 44, A: 255}
	colorExecuted = color.RGBA{R: 148, G: 103, B: 189, A: 255}
	colorEvent    = color.RGBA{R: 214, G: 39, B: 40, A: 255}
	colorView     = color.RGBA{R: 120, G: 120, B: 120, A: 255}
)

// step125 rounds v (> 0) down or up to 1, 2 or 5 times a power of ten.
func step125(v float64, up bool) float64 {
	e := math.Floor(math.Log10(v))
	base := math.Pow(10, e)
	steps := []float64{1, 2, 5, 10}
	if up {
		for _, m := range steps {
			if m*base >= v*(1-1e-9) {
				return m * base
			}
		}
		return 10 * base
	}
	for k := len(steps) - 1; k >= 0; k-- {
		if steps[k]*base <= v*(1+1e-9) {
			return steps[k] * base
		}
	}
	return base
}

// linearTicks labels a linear axis every 1, 2 or 5 times a power of ten, about ten times over its range,
// with an unlabelled tick between labels.
type linearTicks struct{}

func (linearTicks) Ticks(lo, hi float64) []plot.Tick {
	if hi <= lo {
		return nil
	}
	step := step125((hi-lo)/10, true)
	var out []plot.Tick
	for v := math.Ceil(lo/step*2) * step / 2; v <= hi+1e-9; v += step / 2 {
		t := plot.Tick{Value: v}
		if math.Abs(math.Remainder(v, step)) < step*1e-6 {
			t.Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
		out = append(out, t)
	}
	return out
}

// logTicks125 marks a log axis at 1, 2 and 5 times each power of ten (labelled) and at the other
// integers times it (unlabelled).
type logTicks125 struct{}

func (logTicks125) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		base := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * base
			if v < lo*(1-1e-9) || v > hi*(1+1e-9) {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			out = append(out, t)
		}
	}
	return out
}

// WritePlot draws the run's latency over time (p50, p99 and max of the requests accepted in each
// interval) above its throughput over time (requests accepted per second, and executed per second by the
// most advanced replica), with the events marked as vertical lines across both. The format follows the
// file name's extension: .png or .svg.
func WritePlot(res *Result, title, path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("bench: plot %s: unknown format (want .png or .svg)", path)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if err := writePlot(f, res, title, ext); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writePlot(w io.Writer, res *Result, title, ext string) error {
	const width, height = 10 * vg.Inch, 6.5 * vg.Inch
	s := res.Series
	lat := plot.New()
	lat.Title.Text = title
	lat.Y.Label.Text = "commit latency (ms)"
	lat.Y.Scale = plot.LogScale{}
	lat.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, xs := range [][]float64{s.P50, s.P99, s.Max} {
		for _, v := range xs {
			if !math.IsNaN(v) && v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0.1, 1
	}
	// 1-2-5 steps around the data, with room above it for the legend.
	lat.Y.Min, lat.Y.Max = step125(lo/1.2, false), step125(hi*3, true)
	lat.Y.Tick.Marker = logTicks125{}
	for _, l := range []struct {
		ys    []float64
		name  string
		color color.Color
		width vg.Length
	}{{s.Max, "max", colorMax, 1}, {s.P99, "p99", colorP99, 1.5}, {s.P50, "p50", colorP50, 1.5}} {
		if err := addSegments(lat, s.T, l.ys, l.name, l.color, l.width, true); err != nil {
			return err
		}
	}
	lat.Legend.Top = true
	lat.Legend.Left = false

	thr := plot.New()
	thr.X.Label.Text = "time since the load started (s)"
	thr.Y.Label.Text = "requests/s"
	thr.Add(plotter.NewGrid())
	thr.Y.Min = 0
	if err := addSegments(thr, s.T, s.Acked, "accepted by the clients (f+1 replies)", colorAcked, 1.5, false); err != nil {
		return err
	}
	if err := addSegments(thr, s.TS, s.Executed, "executed (most advanced replica)", colorExecuted, 1, false); err != nil {
		return err
	}
	thr.Legend.Top = true
	top := 0.0
	for _, xs := range [][]float64{s.Acked, s.Executed} {
		for _, v := range xs {
			if !math.IsNaN(v) {
				top = math.Max(top, v)
			}
		}
	}
	thr.Y.Max = math.Max(top*1.35, 1) // room for the legend

	xmax := 1.0
	if n := len(s.T); n > 0 {
		xmax = s.T[n-1]
	}
	for _, e := range res.Events {
		xmax = math.Max(xmax, e.At.Seconds())
	}
	for _, p := range []*plot.Plot{lat, thr} {
		p.X.Min, p.X.Max = 0, xmax
		p.X.Tick.Marker = linearTicks{}
	}
	lat.Add(&eventMarks{events: res.Events, labels: true})
	thr.Add(&eventMarks{events: res.Events})

	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	switch ext {
	case ".svg":
		c = vgsvg.New(width, height)
	case ".png", "":
		c = palettedPNG{vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(100), vgimg.UseBackgroundColor(color.White))}
	default:
		return fmt.Errorf("bench: plot: unknown format %q (want .png or .svg)", ext)
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 4 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 4 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{lat}, {thr}}, tiles, dc)
	lat.Draw(canvases[0][0])
	thr.Draw(canvases[1][0])
	_, err := c.WriteTo(w)
	return err
}

// palettedPNG writes the canvas as a paletted PNG: the plot's colours, their blends with white (the
// anti-aliased edges) and greys. It is a third of the size of a full-colour PNG, which matters for plots
// kept in the repository.
type palettedPNG struct{ *vgimg.Canvas }

func (c palettedPNG) WriteTo(w io.Writer) (int64, error) {
	src := c.Image()
	var pal color.Palette
	for g := 0; g <= 255; g += 5 {
		pal = append(pal, color.RGBA{R: uint8(g), G: uint8(g), B: uint8(g), A: 255})
	}
	for _, base := range []color.RGBA{colorP50, colorP99, colorMax, colorAcked, colorExecuted, colorEvent, colorView} {
		for k := 0; k < 12; k++ {
			f := float64(k) / 12 // share of white
			mix := func(v uint8) uint8 { return uint8(float64(v)*(1-f) + 255*f + 0.5) }
			pal = append(pal, color.RGBA{R: mix(base.R), G: mix(base.G), B: mix(base.B), A: 255})
		}
	}
	b := src.Bounds()
	dst := image.NewPaletted(b, pal)
	// Few distinct colours appear: remember each one's nearest palette entry.
	nearest := make(map[color.RGBA]uint8)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(src.At(x, y)).(color.RGBA)
			i, ok := nearest[c]
			if !ok {
				i = uint8(pal.Index(c))
				nearest[c] = i
			}
			dst.Pix[(y-b.Min.Y)*dst.Stride+(x-b.Min.X)] = i
		}
	}
	cw := &countingWriter{w: w}
	err := png.Encode(cw, dst)
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// addSegments adds a line through the points (xs[i], ys[i]), broken where ys holds NaN (or, on a log
// axis, values <= 0); isolated points are drawn as dots. The legend gets one entry.
func addSegments(p *plot.Plot, xs, ys []float64, name string, c color.Color, width vg.Length, logY bool) error {
	var seg plotter.XYs
	first := true
	flush := func() error {
		if len(seg) == 0 {
			return nil
		}
		l, sc, err := plotter.NewLinePoints(seg)
		if err != nil {
			return err
		}
		l.Color, l.Width = c, width
		sc.Color, sc.Radius, sc.Shape = c, width, draw.CircleGlyph{}
		if len(seg) == 1 {
			p.Add(sc)
		} else {
			p.Add(l)
		}
		if first {
			p.Legend.Add(name, l)
			first = false
		}
		seg = nil
		return nil
	}
	for i := range min(len(xs), len(ys)) {
		y := ys[i]
		if math.IsNaN(y) || math.IsInf(y, 0) || (logY && y <= 0) {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		seg = append(seg, plotter.XY{X: xs[i], Y: y})
	}
	return flush()
}

// eventMarks draws each event as a dashed vertical line across the data area, with its label (on the
// plot that shows labels) staggered so that close events stay readable.
type eventMarks struct {
	events []Event
	labels bool
}

func (m *eventMarks) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	// Labels run upwards from the foot of their line; one that would touch the previous label starts
	// above it instead.
	var lastX, lastTop vg.Length
	first := true
	for _, e := range m.events {
		x := trX(e.At.Seconds())
		if x < c.Min.X || x > c.Max.X {
			continue
		}
		col := colorEvent
		line := draw.LineStyle{Color: col, Width: vg.Points(1.2), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}
		if e.Kind == EventView {
			col = colorView
			line = draw.LineStyle{Color: col, Width: vg.Points(0.8), Dashes: []vg.Length{vg.Points(1), vg.Points(2)}}
		}
		c.StrokeLine2(line, x, c.Min.Y, x, c.Max.Y)
		if !m.labels {
			continue
		}
		sty := draw.TextStyle{Color: col, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler}
		sty.Font.Size = vg.Points(8)
		sty.Rotation = math.Pi / 2
		sty.XAlign = draw.XLeft
		sty.YAlign = draw.YTop
		y := c.Min.Y + vg.Points(3)
		if !first && x-lastX < vg.Points(10) {
			y = lastTop + vg.Points(6)
		}
		w := sty.Width(e.Label)
		if y+w > c.Max.Y {
			y = c.Min.Y + vg.Points(3)
		}
		c.FillText(sty, vg.Point{X: x + vg.Points(2), Y: y}, e.Label)
		lastX, lastTop, first = x, y+w, false
	}
}
