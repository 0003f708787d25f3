package scalebench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Markdown writes the figures as a table, one column per size, in the
// shape docs/BENCHMARKS.md shows them.
func (r *Report) Markdown(w io.Writer) {
	if len(r.Sizes) == 0 {
		return
	}
	head := []string{"request (rate)"}
	for _, s := range r.Sizes {
		head = append(head, fmt.Sprintf("%s jobs p50 / p99", thousands(s.Jobs)))
	}
	row := func(cells ...string) { fmt.Fprintln(w, "| "+strings.Join(cells, " | ")+" |") }
	fmt.Fprintln(w)
	row(head...)
	row(strings.Split(strings.Repeat("---,", len(head)), ",")[:len(head)]...)
	for i, res := range r.Sizes[0].Results {
		cells := []string{fmt.Sprintf("%s (%d/s)", res.Scenario, res.Rate)}
		for _, s := range r.Sizes {
			if i >= len(s.Results) {
				cells = append(cells, "-")
				continue
			}
			x := s.Results[i]
			c := fmt.Sprintf("%s / %s", msShort(x.P50), msShort(x.P99))
			if x.Failed > 0 {
				c += fmt.Sprintf(" (%d of %d failed: %s)", x.Failed, x.Requests, x.failures())
			}
			cells = append(cells, c)
		}
		row(cells...)
	}
	for i, res := range r.Sizes[0].Results {
		cells := []string{fmt.Sprintf("peak VmRSS MiB / connections, %s", res.Scenario)}
		for _, s := range r.Sizes {
			if i >= len(s.Results) {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%s / %d", MiB(s.Results[i].Peak.RSS), s.Results[i].Peak.Conns))
		}
		row(cells...)
	}
	for i, res := range r.Sizes[0].Results {
		cells := []string{fmt.Sprintf("CPU ms per request, gateway / NATS, %s", res.Scenario)}
		for _, s := range r.Sizes {
			if i >= len(s.Results) {
				cells = append(cells, "-")
				continue
			}
			x := s.Results[i]
			cells = append(cells, fmt.Sprintf("%.3f / %.3f", float64(x.GatewayCPU.Microseconds())/1000, float64(x.NATSCPU.Microseconds())/1000))
		}
		row(cells...)
	}
	line := func(name string, f func(Size) string) {
		cells := []string{name}
		for _, s := range r.Sizes {
			cells = append(cells, f(s))
		}
		row(cells...)
	}
	line("gateway VmRSS once ready, idle (MiB)", func(s Size) string { return MiB(s.Idle.RSS) })
	line("gateway VmRSS after the load (MiB)", func(s Size) string { return MiB(s.Memory.RSS) })
	line("gateway VmHWM, its peak (MiB)", func(s Size) string { return MiB(s.Memory.HWM) })
	line("gateway start to ready", func(s Size) string { return s.Start.Round(time.Millisecond).String() })
	line("fill (jobs added, time)", func(s Size) string {
		return fmt.Sprintf("%s in %s", thousands(s.Added), s.Fill.Round(100*time.Millisecond))
	})
	line("load average before the load", func(s Size) string { return s.Load })
	line("load average after the load", func(s Size) string { return s.LoadAfter })
	if m := r.Migration; m != nil {
		fmt.Fprintf(w, "\nIndex rebuilt at start over %s jobs of other owners (plus %s of the callers): ready in %s, VmRSS %s MiB, VmHWM %s MiB (load average %s).\n",
			thousands(m.Jobs), thousands(2*OwnJobs), m.Start.Round(time.Millisecond), MiB(m.Memory.RSS), MiB(m.Memory.HWM), m.Load)
	}
}

func msShort(d time.Duration) string {
	v := float64(d.Microseconds()) / 1000
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
