package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"math"
	"os"
	"strings"
)

// writeReportFile writes the HTML report of r to path.
func writeReportFile(path string, r *Result) error {
	b, err := reportHTML(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // a report for the user to open
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// reportHTML renders a self-contained page: the summary table, the latency
// distribution as a percentile curve, throughput and latency over time,
// the find-max ramp, and the raw JSON. The plots are SVG drawn here; the
// page loads nothing.
func reportHTML(r *Result) ([]byte, error) {
	var table bytes.Buffer
	if err := writeTable(&table, r); err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	var charts []template.HTML
	if len(r.Distribution) > 0 {
		title := "Publish→deliver latency by percentile"
		if r.Scenario == "publish" {
			title = "Publish latency by percentile"
		}
		charts = append(charts, percentileChart(title, r.Distribution))
	}
	timeline := func(title, unit string, get func(Sample) float64, color string) {
		var pts [][2]float64
		nonzero := false
		for _, s := range r.Timeline {
			if unit == "ms" && s.DeliveriesPerS == 0 {
				continue // no deliveries, no latency
			}
			v := get(s)
			nonzero = nonzero || v != 0
			pts = append(pts, [2]float64{s.T, v})
		}
		if nonzero {
			charts = append(charts, lineChart(title, "seconds", unit, linearTicks, []series{{name: title, color: color, pts: pts}}, nil))
		}
	}
	timeline("Deliveries per second", "deliveries/s", func(s Sample) float64 { return s.DeliveriesPerS }, "#1f77b4")
	timeline("Publishes per second", "publishes/s", func(s Sample) float64 { return s.PublishesPerS }, "#2ca02c")
	timeline("P99 latency per second", "ms", func(s Sample) float64 { return s.P99Ms }, "#d62728")
	timeline("Open subscriber streams", "streams", func(s Sample) float64 { return float64(s.Open) }, "#9467bd")
	if len(r.Steps) > 0 {
		var pts [][2]float64
		for _, s := range r.Steps {
			pts = append(pts, [2]float64{s.Rate, s.P99Ms})
		}
		bound := []series{{name: "bound", color: "#999", dashed: true, pts: [][2]float64{{r.Steps[0].Rate, r.P99BoundMs}, {r.Steps[len(r.Steps)-1].Rate, r.P99BoundMs}}}}
		charts = append(charts, lineChart("Find-max: P99 by publish rate", "updates/s", "p99 ms", linearTicks, []series{{name: "p99", color: "#d62728", pts: pts, dots: true}}, bound))
	}
	var out bytes.Buffer
	err = reportTmpl.Execute(&out, map[string]any{
		"Title":  "herald bench " + r.Scenario,
		"Table":  table.String(),
		"Charts": charts,
		"JSON":   string(raw),
	})
	return out.Bytes(), err
}

var reportTmpl = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}
svg{display:block;margin:1.5em 0;background:#fff}
svg text{font:11px system-ui,sans-serif;fill:#333}
svg .title{font-size:14px;font-weight:600}
</style></head><body>
<h1>{{.Title}}</h1>
<pre>{{.Table}}</pre>
{{range .Charts}}{{.}}
{{end}}
<details><summary>Result as JSON</summary><pre>{{.JSON}}</pre></details>
</body></html>
`))

type series struct {
	name         string
	color        string
	pts          [][2]float64
	dashed, dots bool
}

type tick struct {
	v     float64
	label string
}

const (
	chartW, chartH         = 900, 320
	padL, padR, padT, padB = 70, 20, 36, 44
	plotW, plotH           = chartW - padL - padR, chartH - padT - padB
	percentileAxisMaxNines = 6
)

// percentileChart plots latency against percentile on HdrHistogram's
// axis: x = log10(1/(1-p)), so 90%, 99%, 99.9% … are evenly spaced and
// the tail gets the room it deserves.
func percentileChart(title string, d []Quantile) template.HTML {
	var pts [][2]float64
	maxX := 0.0
	for _, q := range d {
		if q.Percentile >= 100 {
			continue
		}
		x := math.Log10(1 / (1 - q.Percentile/100))
		maxX = max(maxX, x)
		pts = append(pts, [2]float64{x, q.Ms})
	}
	// The maximum sits half a decade beyond the last percentile.
	if last := d[len(d)-1]; last.Percentile >= 100 {
		pts = append(pts, [2]float64{maxX + 0.5, last.Ms})
	}
	xticks := func(lo, hi float64) []tick {
		var ts []tick
		for n := 0; n <= percentileAxisMaxNines && float64(n) <= hi+1e-9; n++ {
			// 0%, 90%, 99%, 99.9%, …
			label := fmt.Sprintf("%.*f%%", max(n-2, 0), 100-100/math.Pow(10, float64(n)))
			ts = append(ts, tick{float64(n), label})
		}
		return ts
	}
	return lineChart(title, "percentile", "ms", xticks, []series{{name: "latency", color: "#1f77b4", pts: pts}}, nil)
}

// linearTicks returns about six round ticks covering lo..hi.
func linearTicks(lo, hi float64) []tick {
	if hi <= lo {
		hi = lo + 1
	}
	step := niceStep((hi - lo) / 6)
	var ts []tick
	for v := math.Floor(lo/step) * step; ; v += step {
		ts = append(ts, tick{v, trimNum(v)})
		if v >= hi-step*1e-9 {
			return ts
		}
	}
}

func niceStep(raw float64) float64 {
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func trimNum(v float64) string {
	if math.Abs(v) >= 1000 {
		return num(v)
	}
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

// lineChart draws series (and guides, drawn thinner) on shared axes; the
// y axis starts at zero.
func lineChart(title, xLabel, yLabel string, xTicks func(lo, hi float64) []tick, ss, guides []series) template.HTML {
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range append(append([]series{}, ss...), guides...) {
		for _, p := range s.pts {
			minX, maxX, maxY = min(minX, p[0]), max(maxX, p[0]), max(maxY, p[1])
		}
	}
	if math.IsInf(minX, 0) {
		minX, maxX = 0, 1
	}
	if maxX <= minX {
		maxX = minX + 1
	}
	yts := linearTicks(0, max(maxY, 1e-3))
	maxY = yts[len(yts)-1].v
	xts := xTicks(minX, maxX)
	if len(xts) > 0 {
		minX = min(minX, xts[0].v)
		maxX = max(maxX, xts[len(xts)-1].v)
	}
	sx := func(x float64) float64 { return padL + (x-minX)/(maxX-minX)*plotW }
	sy := func(y float64) float64 { return padT + plotH - y/maxY*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, html.EscapeString(title))
	fmt.Fprintf(&b, `<text class="title" x="%d" y="20">%s</text>`, padL, html.EscapeString(title))
	for _, t := range yts {
		y := sy(t.v)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e5e5e5"/>`, padL, padL+plotW, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, y+4, html.EscapeString(t.label))
	}
	for _, t := range xts {
		if t.v < minX || t.v > maxX {
			continue
		}
		x := sx(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#e5e5e5"/>`, x, x, padT, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x, padT+plotH+16, html.EscapeString(t.label))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`, padL, padT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`, padL+plotW/2, chartH-6, html.EscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="14" y="%d" text-anchor="middle" transform="rotate(-90 14 %d)">%s</text>`, padT+plotH/2, padT+plotH/2, html.EscapeString(yLabel))
	draw := func(s series, width float64) {
		if len(s.pts) == 0 {
			return
		}
		var pts []string
		for _, p := range s.pts {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(p[0]), sy(p[1])))
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%.1f"%s points="%s"><title>%s</title></polyline>`, s.color, width, dash, strings.Join(pts, " "), html.EscapeString(s.name))
		if s.dots {
			for _, p := range s.pts {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s, %s</title></circle>`, sx(p[0]), sy(p[1]), s.color, trimNum(p[0]), trimNum(p[1]))
			}
		}
	}
	for _, g := range guides {
		draw(g, 1)
	}
	for _, s := range ss {
		draw(s, 2)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built here, every text escaped
}
