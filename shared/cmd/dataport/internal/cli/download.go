package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/client"
)

// which are the files a download asks for beside (or instead of) a
// completed export's data files.
type which struct {
	archive, manifest, partial bool
	only                       string
}

func newDownloadCmd(g *globals) *cobra.Command {
	var dir string
	var w which
	cmd := &cobra.Command{
		Use:   "download EXPORT_ID",
		Short: "Download an export's files, verified against their SHA-256",
		Long: `Download every file of a completed export (or one, with --file) into --dir.
With --archive, download the export's zip (a room export with the files it
links to, under assets/) instead of its files; with --manifest, also its
manifest.json (each file's size, record count and SHA-256). --file picks any
one of these by name.

A failed, rejected or canceled export may have kept the chunks it finished
(dataport status shows them as partial files): --partial downloads those.

Each file is written to NAME.part first; an interrupted download continues
where it stopped (an HTTP Range request) when run again. A file is renamed
into place only once its SHA-256 matches the export's; a file already there
and matching is skipped. A mismatch removes the partial file and exits 10.`,
		Example: `  dataport download 5kJq2... --dir ./exports
  dataport download 5kJq2... --archive --manifest
  dataport download 5kJq2... --partial`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := g.client()
			if err != nil {
				return err
			}
			e, err := api.Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.downloadAll(cmd, api, e, dir, w)
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "directory to write the files into")
	cmd.Flags().StringVar(&w.only, "file", "", "download only this file (a data file, the archive or the manifest, by name)")
	cmd.Flags().BoolVar(&w.archive, "archive", false, "download the export's zip archive instead of its files")
	cmd.Flags().BoolVar(&w.manifest, "manifest", false, "also download the export's manifest.json")
	cmd.Flags().BoolVar(&w.partial, "partial", false, "download what a failed or canceled export finished (its partial files)")
	cmd.MarkFlagsMutuallyExclusive("partial", "archive")
	cmd.MarkFlagsMutuallyExclusive("partial", "manifest")
	return cmd
}

// selectFiles returns the files of e that w asks for, or an error with
// the exit code that says why there are none.
func selectFiles(e *client.Export, w which) ([]client.File, error) {
	ended := e.State == "failed" || e.State == "rejected" || e.State == "canceled"
	expired := withCode(ExitNotFound, "the files of export %s have expired and were deleted; start a new export", e.ID)
	switch {
	case w.partial && e.State == "completed":
		return nil, withCode(ExitNotFound, "export %s completed; it has files, not partial ones: dataport download %s", e.ID, e.ID)
	case w.partial && ended && e.FilesExpired:
		return nil, expired
	case w.partial && ended && len(e.PartialFiles) == 0:
		return nil, withCode(ExitNotFound, "export %s %s and kept no partial files", e.ID, e.State)
	case w.partial && ended:
		return only(e, e.PartialFiles, w.only)
	case ended && len(e.PartialFiles) > 0 && !e.FilesExpired:
		return nil, withCode(ExitFailed, "export %s %s: %s; it has no files, but kept %d partial files: dataport download %s --partial",
			e.ID, e.State, e.Error, len(e.PartialFiles), e.ID)
	case ended:
		return nil, withCode(ExitFailed, "export %s %s: %s; it has no files", e.ID, e.State, e.Error)
	case e.State != "completed":
		return nil, withCode(ExitConflict, "export %s is %s, not completed yet: dataport status %s --watch", e.ID, e.State, e.ID)
	case e.FilesExpired:
		return nil, expired
	}
	if w.only != "" {
		all := append([]client.File(nil), e.Files...)
		for _, f := range []*client.File{e.Archive, e.Manifest} {
			if f != nil {
				all = append(all, *f)
			}
		}
		return only(e, all, w.only)
	}
	var fs []client.File
	if w.archive {
		if e.Archive == nil {
			return nil, withCode(ExitNotFound, "export %s has no archive; its files are: dataport download %s", e.ID, e.ID)
		}
		fs = append(fs, *e.Archive)
	} else {
		fs = append(fs, e.Files...)
	}
	if w.manifest {
		if e.Manifest == nil {
			return nil, withCode(ExitNotFound, "export %s has no manifest", e.ID)
		}
		fs = append(fs, *e.Manifest)
	}
	return fs, nil
}

// only is the file of fs named name, or all of fs when name is empty.
func only(e *client.Export, fs []client.File, name string) ([]client.File, error) {
	if name == "" {
		return fs, nil
	}
	for _, f := range fs {
		if f.Name == name {
			return []client.File{f}, nil
		}
	}
	return nil, withCode(ExitNotFound, "export %s has no file %q", e.ID, name)
}

// downloadAll downloads the files of e that w asks for into dir.
func (g *globals) downloadAll(cmd *cobra.Command, api *client.Client, e *client.Export, dir string, w which) error {
	files, err := selectFiles(e, w)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	done := []*client.Downloaded{}
	for _, f := range files {
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
	if g.json() {
		return printJSON(cmd.OutOrStdout(), done)
	}
	return nil
}
