package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/client"
)

func newStatusCmd(g *globals) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status EXPORT_ID",
		Short: "Show an export; --watch follows it live until it ends",
		Long: `Show an export. With --watch, follow it as the gateway pushes its changes
(server-sent events, resumed after a dropped connection) with a progress bar
on stderr (records, bytes, rate and ETA) until it ends; the exit code is 9
if it ends failed, rejected or canceled. With -o json --watch, each change is
printed as one JSON line.`,
		Example: "  dataport status 5kJq2... --watch",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := g.client()
			if err != nil {
				return err
			}
			if watch {
				_, err := g.watch(cmd, api, args[0])
				return err
			}
			e, err := api.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), e.Raw)
			}
			printExport(cmd.OutOrStdout(), e)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the export until it ends")
	return cmd
}

// watch follows the export to its end and returns its final state, an
// error with ExitFailed if it did not complete.
func (g *globals) watch(cmd *cobra.Command, api *client.Client, id string) (*client.Export, error) {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var (
		last *client.Export
		bar  *progressBar
	)
	if !g.json() && !g.noProgress {
		bar = newProgressBar(errOut)
	}
	err := api.Follow(cmd.Context(), id, func(ev client.Event) error {
		last = ev.Export
		if g.json() {
			var line bytes.Buffer
			if err := json.Compact(&line, ev.Export.Raw); err != nil {
				return err
			}
			_, err := fmt.Fprintln(out, line.String())
			return err
		}
		if bar != nil {
			bar.update(ev.Export)
		}
		return nil
	})
	if bar != nil {
		bar.finish()
	}
	if err != nil {
		return nil, err
	}
	if !g.json() {
		printExport(out, last)
	}
	if last.State != "completed" {
		reason := last.Error
		if reason == "" {
			reason = "no reason given"
		}
		return last, withCode(ExitFailed, "export %s %s: %s", last.ID, last.State, reason)
	}
	return last, nil
}

// progressBar shows an export's percent with its records, bytes, rate and
// ETA, computed from the changes seen since the watch began.
type progressBar struct {
	bar          *progressbar.ProgressBar
	w            io.Writer
	start        time.Time
	startPercent uint32
	startBytes   uint64
	startRecords uint64
	seen         bool
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{
		w: w,
		bar: progressbar.NewOptions(100,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionThrottle(100*time.Millisecond),
		),
	}
}

func (p *progressBar) update(e *client.Export) {
	now := time.Now()
	if !p.seen {
		p.seen, p.start = true, now
		p.startPercent, p.startBytes, p.startRecords = e.Progress.Percent, e.Progress.Bytes, e.Progress.Records
	}
	_ = p.bar.Set(int(min(e.Progress.Percent, 100)))
	// Describe renders at once, with the percent just set; Set alone may
	// be throttled.
	p.bar.Describe(describe(e, now.Sub(p.start), p.startPercent, p.startRecords, p.startBytes))
}

// describe is the text beside the bar: state, records, bytes, rate, ETA.
func describe(e *client.Export, elapsed time.Duration, p0 uint32, r0, b0 uint64) string {
	parts := []string{e.State, fmt.Sprintf("%d records", e.Progress.Records), humanBytes(e.Progress.Bytes)}
	if secs := elapsed.Seconds(); secs >= 0.5 {
		if e.Progress.Bytes > b0 {
			parts = append(parts, humanBytes(uint64(float64(e.Progress.Bytes-b0)/secs))+"/s")
		} else if e.Progress.Records > r0 {
			parts = append(parts, fmt.Sprintf("%.0f records/s", float64(e.Progress.Records-r0)/secs))
		}
		if p := e.Progress.Percent; p > p0 && p < 100 && !e.Terminal() {
			eta := time.Duration(float64(elapsed) * float64(100-p) / float64(p-p0))
			parts = append(parts, "ETA "+eta.Round(time.Second).String())
		}
	}
	return strings.Join(parts, " · ")
}

func (p *progressBar) finish() {
	if p.seen {
		_ = p.bar.Finish()
	}
	_ = p.bar.Exit()
	fmt.Fprintln(p.w)
}

func humanBytes(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// printExport writes an export for a person.
func printExport(w io.Writer, e *client.Export) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	row("ID", "%s", e.ID)
	row("Kind", "%s (%s)", e.Kind, e.Format)
	row("State", "%s", e.State)
	if e.Error != "" {
		row("Reason", "%s", e.Error)
	}
	row("Progress", "%d%%, %d records, %s", e.Progress.Percent, e.Progress.Records, humanBytes(e.Progress.Bytes))
	if e.Recurrence != nil {
		row("Recurring", "%s (runs: %d, next: %s)", e.Recurrence.Instruction, e.Recurrence.Runs, e.Recurrence.Next)
	}
	row("Created", "%s", e.CreatedAt)
	row("Updated", "%s", e.UpdatedAt)
	if e.ExpiresAt != "" {
		row("Expires", "%s", e.ExpiresAt)
	}
	files := func(label string, fs []client.File) {
		for i, f := range fs {
			k := ""
			if i == 0 {
				k = label
			}
			row(k, "%s  %s  %d records  sha256 %s", f.Name, humanBytes(f.Size), f.Records, f.SHA256)
		}
	}
	files("Files", e.Files)
	if e.Archive != nil {
		row("Archive", "%s  %s  sha256 %s", e.Archive.Name, humanBytes(e.Archive.Size), e.Archive.SHA256)
	}
	if e.Manifest != nil {
		row("Manifest", "%s  %s  sha256 %s", e.Manifest.Name, humanBytes(e.Manifest.Size), e.Manifest.SHA256)
	}
	if len(e.PartialFiles) > 0 {
		files("Partial files", e.PartialFiles)
		row("", "%s", "(finished before the export stopped: dataport download "+e.ID+" --partial)")
	}
	if e.FilesExpired {
		row("", "%s", "(the files have expired and were deleted)")
	}
	_ = tw.Flush()
}
