package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/client"
)

func newDownloadCmd(g *globals) *cobra.Command {
	var dir, only string
	cmd := &cobra.Command{
		Use:   "download EXPORT_ID",
		Short: "Download a completed export's files, verified against their SHA-256",
		Long: `Download every file of a completed export (or one, with --file) into --dir.
Each file is written to NAME.part first; an interrupted download continues
where it stopped (an HTTP Range request) when run again. A file is renamed
into place only once its SHA-256 matches the export's; a file already there
and matching is skipped. A mismatch removes the partial file and exits 10.`,
		Example: "  dataport download 5kJq2... --dir ./exports",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := g.client()
			if err != nil {
				return err
			}
			e, err := api.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.downloadAll(cmd, api, e, dir, only)
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "directory to write the files into")
	cmd.Flags().StringVar(&only, "file", "", "download only this file")
	return cmd
}

// downloadAll downloads e's files (only the one named, if set) into dir.
func (g *globals) downloadAll(cmd *cobra.Command, api *client.Client, e *client.Export, dir, only string) error {
	switch {
	case e.State == "failed" || e.State == "rejected" || e.State == "canceled":
		return withCode(ExitFailed, "export %s %s: %s; it has no files", e.ID, e.State, e.Error)
	case e.State != "completed":
		return withCode(ExitConflict, "export %s is %s, not completed yet: dataport status %s --watch", e.ID, e.State, e.ID)
	case e.FilesExpired:
		return withCode(ExitNotFound, "the files of export %s have expired and were deleted; start a new export", e.ID)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var done []*client.Downloaded
	found := false
	for _, f := range e.Files {
		if only != "" && f.Name != only {
			continue
		}
		found = true
		var bar *progressbar.ProgressBar
		progress := func(start int64) io.Writer {
			if g.json() || g.noProgress {
				return nil
			}
			bar = progressbar.DefaultBytes(int64(f.Size), f.Name)
			progressbar.OptionSetWriter(cmd.ErrOrStderr())(bar)
			_ = bar.Set64(start)
			return bar
		}
		d, err := api.Download(cmd.Context(), f, dir, progress)
		if bar != nil {
			_ = bar.Finish()
			fmt.Fprintln(cmd.ErrOrStderr())
		}
		if err != nil {
			return err
		}
		done = append(done, d)
		if !g.json() {
			how := "downloaded"
			switch {
			case d.Skipped:
				how = "already there"
			case d.Resumed > 0:
				how = fmt.Sprintf("resumed at byte %d", d.Resumed)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s  %s  sha256 %s verified (%s)\n", d.Path, humanBytes(uint64(d.Size)), d.SHA256, how)
		}
	}
	if only != "" && !found {
		return withCode(ExitNotFound, "export %s has no file %q", e.ID, only)
	}
	if g.json() {
		if done == nil {
			done = []*client.Downloaded{}
		}
		return printJSON(cmd.OutOrStdout(), done)
	}
	return nil
}
