package timeline

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// A phase of a slot at one replica, from one of its moments to the next, and its colour in the pictures.
type phase struct {
	name  string
	color color.RGBA
	start func(r *ReplicaSlot) int64
	end   func(r *ReplicaSlot) int64
}

// slotPhases are the phases of a slot, in order; their names are those of trace.Phase and the
// p2pbft_consensus_phase_seconds metric.
var slotPhases = []phase{
	{"pre-prepare → prepared", color.RGBA{31, 119, 180, 255},
		func(r *ReplicaSlot) int64 { return r.PrePrepare() }, func(r *ReplicaSlot) int64 { return r.Prepared }},
	{"prepared → committed", color.RGBA{255, 127, 14, 255},
		func(r *ReplicaSlot) int64 { return r.Prepared }, func(r *ReplicaSlot) int64 { return r.Committed }},
	{"committed → executed", color.RGBA{44, 160, 44, 255},
		func(r *ReplicaSlot) int64 { return r.Committed }, func(r *ReplicaSlot) int64 { return r.Executed }},
	{"executed → durable", color.RGBA{148, 103, 189, 255},
		func(r *ReplicaSlot) int64 { return r.Executed }, func(r *ReplicaSlot) int64 { return r.Durable }},
	{"durable → replied", color.RGBA{140, 86, 75, 255},
		func(r *ReplicaSlot) int64 { return r.Durable }, func(r *ReplicaSlot) int64 { return r.Replied }},
}

var (
	colorQuorum     = color.RGBA{0, 0, 0, 255}
	colorPrepareArr = color.RGBA{23, 75, 120, 255}
	colorCommitArr  = color.RGBA{170, 80, 0, 255}
	colorViewChange = color.NRGBA{214, 39, 40, 45}
	colorViewLabel  = color.RGBA{214, 39, 40, 255}
	colorSeparator  = color.RGBA{200, 200, 200, 255}
)

// DefaultTimelineSlots is how many slots WriteTimelinePNG draws at most: the latest ones of the trace.
const DefaultTimelineSlots = 12

// WriteTimelinePNG draws t's latest slots (at most DefaultTimelineSlots) as a swimlane picture to path:
// a group of lanes per slot, one lane per replica, each phase a coloured bar on a common time axis
// (milliseconds after the first slot's pre-prepare), the prepared and committed quorum moments as black
// marks, the PREPAREs and COMMITs each replica received as small ticks under its bar, and the view changes
// in that time as red bands from the first VIEW-CHANGE to the NEW-VIEW.
func WriteTimelinePNG(t *Trace, title, path string) error {
	return writeFile(path, func(w io.Writer) error { return writeTimeline(w, t, title, DefaultTimelineSlots) })
}

// WritePhasesPNG draws where the time of t's slots went, phase by phase, to path: for each phase a box
// (quartiles, median, whiskers) of its duration over every slot and replica of t, and the two phases of
// the view changes, on a log scale.
func WritePhasesPNG(t *Trace, title, path string) error {
	return writeFile(path, func(w io.Writer) error { return writePhases(w, t, title) })
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("timeline: %w", err)
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("timeline: %s: %w", path, err)
	}
	return f.Close()
}

// lanes is a gonum plotter of rectangles and marks in data coordinates.
type lanes struct {
	rects                  []rect
	xmin, xmax, ymin, ymax float64
	labels                 []label
}

type rect struct {
	x0, x1, y0, y1 float64
	color          color.Color
}

type label struct {
	x, y float64
	text string
}

func (l *lanes) add(x0, x1, y0, y1 float64, c color.Color) {
	l.rects = append(l.rects, rect{x0, x1, y0, y1, c})
}

// Plot implements plot.Plotter.
func (l *lanes) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for _, r := range l.rects {
		x0, x1 := trX(r.x0), trX(r.x1)
		if x1-x0 < 0.6 { // a moment, or a phase too short to see: keep it one pixel wide
			x1 = x0 + 0.6
		}
		y0, y1 := trY(r.y0), trY(r.y1)
		pts := c.ClipPolygonXY([]vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}})
		c.FillPolygon(r.color, pts)
	}
	sty := draw.TextStyle{Color: colorViewLabel, Font: plot.DefaultFont, Handler: plot.DefaultTextHandler}
	sty.Font.Size = vg.Points(9)
	for _, lb := range l.labels {
		pt := vg.Point{X: trX(lb.x) + 2, Y: trY(lb.y)}
		if c.Contains(pt) {
			c.FillText(sty, pt, lb.text)
		}
	}
}

// DataRange implements plot.DataRanger.
func (l *lanes) DataRange() (xmin, xmax, ymin, ymax float64) { return l.xmin, l.xmax, l.ymin, l.ymax }

// swatch is a legend entry: a filled square.
type swatch struct{ color color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	pts := []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}}
	c.FillPolygon(s.color, pts)
}

func writeTimeline(w io.Writer, t *Trace, title string, maxSlots int) error {
	slots := t.Slots
	if len(slots) > maxSlots {
		slots = slots[len(slots)-maxSlots:]
	}
	replicas := t.Replicas()
	if len(replicas) == 0 {
		replicas = []int{0}
	}
	// The time axis starts at the earliest origin of the drawn slots (or of the view changes, if no slot).
	var origin, end int64
	for i := range slots {
		if o := slots[i].Origin; o != 0 && (origin == 0 || o < origin) {
			origin = o
		}
		end = max(end, slots[i].End())
	}
	vcs := t.ViewChanges
	if origin == 0 {
		for i := range vcs {
			if o := vcs[i].Origin; o != 0 && (origin == 0 || o < origin) {
				origin = o
			}
			end = max(end, vcs[i].NewView())
		}
	}
	msAt := func(ns int64) float64 { return float64(ns-origin) / 1e6 }

	rows := max(len(slots)*len(replicas), 1)
	l := &lanes{xmin: 0, xmax: math.Max(msAt(end)*1.03, 1), ymin: -0.5, ymax: float64(rows) - 0.5}
	var ticks []plot.Tick
	rowY := func(k int) float64 { return float64(rows - 1 - k) } // row 0 at the top
	// The view changes first, so that the bars are drawn over their bands.
	bands := 0
	for i := range vcs {
		v := &vcs[i]
		a, b := v.Origin, v.NewView()
		if a == 0 || b == 0 || msAt(b) < l.xmin || msAt(a) > l.xmax {
			continue
		}
		l.add(msAt(a), msAt(b), l.ymin, l.ymax, colorViewChange)
		bands++
		l.labels = append(l.labels, label{x: msAt(a), y: l.ymax - 0.4, text: fmt.Sprintf("view change to %d", v.View)})
	}
	for si := range slots {
		s := &slots[si]
		if si > 0 {
			y := rowY(si*len(replicas)) + 0.5
			l.add(l.xmin, l.xmax, y-0.015, y+0.015, colorSeparator)
		}
		for ri, rep := range replicas {
			y := rowY(si*len(replicas) + ri)
			name := "r" + strconv.Itoa(rep)
			if rep == s.Primary {
				name += " (P)"
			}
			if ri == 0 {
				name = fmt.Sprintf("seq %d v%d  %s", s.Seq, s.View, name)
			}
			ticks = append(ticks, plot.Tick{Value: y, Label: name})
			var r *ReplicaSlot
			for k := range s.Replicas {
				if s.Replicas[k].Replica == rep {
					r = &s.Replicas[k]
				}
			}
			if r == nil {
				continue
			}
			for _, ph := range slotPhases {
				a, b := ph.start(r), ph.end(r)
				if a != 0 && b != 0 && b >= a {
					l.add(msAt(a), msAt(b), y-0.3, y+0.3, ph.color)
				}
			}
			for _, q := range []int64{r.Prepared, r.Committed} {
				if q != 0 {
					l.add(msAt(q), msAt(q), y-0.42, y+0.42, colorQuorum)
				}
			}
			for _, v := range r.Prepares {
				l.add(msAt(v.At), msAt(v.At), y-0.42, y-0.3, colorPrepareArr)
			}
			for _, v := range r.Commits {
				l.add(msAt(v.At), msAt(v.At), y+0.3, y+0.42, colorCommitArr)
			}
		}
	}

	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "ms after the first pre-prepare"
	p.X.Min, p.X.Max = l.xmin, l.xmax
	p.Y.Min, p.Y.Max = l.ymin, l.ymax
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Y.Tick.Label.Font.Size = vg.Points(8)
	p.Add(plotter.NewGrid())
	p.Add(l)
	// The legend sits in a strip above the plot, not over the bars.
	leg := plot.NewLegend()
	leg.Top, leg.Left = true, false
	leg.TextStyle.Font.Size = vg.Points(8)
	entries := 0
	legend := func(name string, c color.Color) {
		leg.Add(name, swatch{c})
		entries++
	}
	for _, ph := range slotPhases {
		legend(ph.name, ph.color)
	}
	legend("quorum reached (prepared, committed)", colorQuorum)
	legend("PREPARE received (tick below the bar), COMMIT (above)", colorPrepareArr)
	if bands > 0 {
		legend("view change (first VIEW-CHANGE to NEW-VIEW)", colorViewChange)
	}

	height := 1.6*vg.Inch + vg.Length(rows)*0.2*vg.Inch
	c := vgimg.NewWith(vgimg.UseWH(11*vg.Inch, height), vgimg.UseDPI(100), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(c)
	body := dc
	body.Max.Y -= vg.Length(entries)*0.125*vg.Inch + 0.05*vg.Inch
	p.Draw(body)
	strip := dc
	strip.Min.Y = body.Max.Y
	leg.Draw(strip)
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}

// durations returns, for each slot phase, its durations in ms over every slot and replica of t.
func durations(t *Trace) [][]float64 {
	out := make([][]float64, len(slotPhases))
	for i := range t.Slots {
		for k := range t.Slots[i].Replicas {
			r := &t.Slots[i].Replicas[k]
			for pi, ph := range slotPhases {
				// A phase that took no time here (both moments came from one fetched certificate) is not
				// time spent in it.
				a, b := ph.start(r), ph.end(r)
				if a != 0 && b > a {
					out[pi] = append(out[pi], float64(b-a)/1e6)
				}
			}
		}
	}
	return out
}

func writePhases(w io.Writer, t *Trace, title string) error {
	names := make([]string, 0, len(slotPhases)+2)
	values := durations(t)
	for _, ph := range slotPhases {
		names = append(names, ph.name)
	}
	var vcToNV, nvToFirst []float64
	for i := range t.ViewChanges {
		for _, r := range t.ViewChanges[i].Replicas {
			if nv := r.NewView(); r.Sent != 0 && nv >= r.Sent {
				vcToNV = append(vcToNV, float64(nv-r.Sent)/1e6)
			}
			if nv := r.NewView(); nv != 0 && r.FirstCommit >= nv {
				nvToFirst = append(nvToFirst, float64(r.FirstCommit-nv)/1e6)
			}
		}
	}
	if len(vcToNV)+len(nvToFirst) > 0 {
		names = append(names, "view change → new view", "new view → first commit")
		values = append(values, vcToNV, nvToFirst)
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "duration (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), math.Inf(-1)
	labels := make([]string, len(names))
	for i, vs := range values {
		labels[i] = fmt.Sprintf("%s\n(%d)", names[i], len(vs))
		if len(vs) == 0 {
			continue
		}
		// A log axis cannot show 0: a phase that took under a microsecond is drawn at 1 µs.
		vals := make(plotter.Values, len(vs))
		for k, v := range vs {
			vals[k] = math.Max(v, 0.001)
			lo, hi = math.Min(lo, vals[k]), math.Max(hi, vals[k])
		}
		b, err := plotter.NewBoxPlot(vg.Points(28), float64(i), vals)
		if err != nil {
			return err
		}
		col := colorViewLabel
		if i < len(slotPhases) {
			col = slotPhases[i].color
		}
		b.FillColor = col
		b.GlyphStyle.Radius = vg.Points(1.2)
		p.Add(b)
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0.01, 1
	}
	p.Y.Min, p.Y.Max = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	if p.Y.Max <= p.Y.Min {
		p.Y.Max = p.Y.Min * 10
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Font.Size = vg.Points(8)
	c := vgimg.NewWith(vgimg.UseWH(11*vg.Inch, 6*vg.Inch), vgimg.UseDPI(100), vgimg.UseBackgroundColor(color.White))
	p.Draw(draw.New(c))
	_, err := vgimg.PngCanvas{Canvas: c}.WriteTo(w)
	return err
}
