package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// writeTable prints res for a reader: one line per figure, the scenario's
// own figures after the common ones.
func writeTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(tw, "  %s\t%s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(tw, "herald bench %s   %s\n", r.Scenario, r.Hub)
	procs := "1 process"
	if r.Workers > 0 {
		procs = fmt.Sprintf("%d worker process%s", r.Workers, plural(r.Workers, "es"))
	}
	row("setup", "%s, draft %s, %d source addresses, %s, open-files limit %d", r.Protocol, r.Draft, r.SourceAddrs, procs, r.FDLimit)
	if r.Scenario != "publish" {
		s := fmt.Sprintf("%d", r.Subscribers)
		if r.ConnectErrors > 0 {
			s += fmt.Sprintf(" (%d failed to connect)", r.ConnectErrors)
		}
		if r.Topics > 0 {
			s += fmt.Sprintf(" over %d topic%s", r.Topics, plural(r.Topics, "s"))
		}
		row("subscribers", "%s", s)
	}
	// idle and churn publish nothing: no publisher, delivery or loss rows.
	quiet := r.Scenario == "idle" || r.Scenario == "churn"
	if !quiet {
		pub := fmt.Sprintf("%d", r.Publishers)
		if r.Rate > 0 {
			pub += fmt.Sprintf(" at %s/s in all", num(r.Rate))
		}
		if r.PayloadBytes > 0 {
			pub += fmt.Sprintf(", %d-byte payloads", r.PayloadBytes)
		}
		row("publishers", "%s", pub)
	}
	d := fmt.Sprintf("%.1f s", r.DurationS)
	if r.DrainS > 0 {
		d += fmt.Sprintf(" + %.2f s drain", r.DrainS)
	}
	row("duration", "%s", d)
	if !quiet {
		row("published", "%s (%s/s), %d errors", num(float64(r.Published)), num(r.PublishesPerS), r.PublishErrors)
	}
	if r.PublishLatency != nil && r.Scenario != "publish" {
		row("publish latency", "%s", pcts(*r.PublishLatency))
	}
	switch {
	case quiet:
	case r.Scenario == "publish":
		row("publish latency", "%s", pcts(r.Latency))
	case r.Scenario == "resume":
		writeResume(tw, r)
	default:
		row("delivered", "%s of %s expected (%s/s)", num(float64(r.Delivered)), num(float64(r.Expected)), num(r.DeliveriesPerS))
		row("latency", "%s", pcts(r.Latency))
	}
	if r.Scenario != "publish" && !quiet {
		row("lost", "%d", r.Lost)
		row("duplicates", "%d", r.Duplicates)
		row("out of order", "%d", r.OutOfOrder)
		if r.Unparsed > 0 {
			row("unparsed", "%d", r.Unparsed)
		}
		row("reconnects", "%d (possible loss reported %d)", r.Reconnects, r.PossibleLoss)
	}
	if quiet {
		row("reconnects", "%d", r.Reconnects)
	}
	if r.ServerRSSPerConnKB > 0 {
		row("server RSS/conn", "%.1f KB", r.ServerRSSPerConnKB)
	}
	if len(r.Steps) > 0 {
		fmt.Fprintf(tw, "  find-max\thighest rate with p99 under %.0f ms and nothing lost: %s/s\n", r.P99BoundMs, num(r.MaxRate))
		fmt.Fprintf(tw, "    rate/s\tpublished/s\tdeliveries/s\tp99 ms\tlost\tverdict\n")
		for _, s := range r.Steps {
			fmt.Fprintf(tw, "    %s\t%s\t%s\t%.2f\t%d\t%s\n", num(s.Rate), num(s.PublishesPerS), num(s.DeliveriesPerS), s.P99Ms, s.Lost, okWord(s))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		row(strings.ReplaceAll(k, "_", " "), "%v", r.Extra[k])
	}
	for _, n := range r.Notes {
		row("note", "%s", n)
	}
	if r.Interrupted {
		row("note", "interrupted: figures cover the run until then")
	}
	return tw.Flush()
}

func writeResume(tw io.Writer, r *Result) {
	fmt.Fprintf(tw, "  resume\tfrom\theaders ms\tfirst event ms\treceived/expected\tevents/s\tlost\tdup\tooo\tunexpected\tanswered\tverdict\n")
	for _, c := range r.Resume {
		from := fmt.Sprintf("#%d", c.Position)
		if c.Position < 0 {
			from = "unknown id"
		}
		verdict := "ok"
		if !c.OK {
			verdict = "FAIL"
		}
		answered := c.ResumedFrom
		if len(answered) > 24 {
			answered = answered[:21] + "..."
		}
		fmt.Fprintf(tw, "    %s\t%s\t%.2f\t%.2f\t%d/%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n",
			c.Name, from, c.HeadersMs, c.FirstEventMs, c.Received, c.Expected, num(c.EventsPerS),
			c.Lost, c.Duplicates, c.OutOfOrder, c.Unexpected, answered, verdict)
	}
}

func pcts(p Percentiles) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s ms", msStr(p.P50), msStr(p.P90), msStr(p.P99), msStr(p.P999), msStr(p.Max))
}

func msStr(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// num prints a count or rate with thousands separators.
func num(v float64) string {
	if v < 0 {
		return "-" + num(-v)
	}
	if v < 100 && v != float64(int64(v)) {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func plural(n int, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}
