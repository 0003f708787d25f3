package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/client"
)

func newListCmd(g *globals) *cobra.Command {
	var (
		limit int
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your exports, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := g.client()
			if err != nil {
				return err
			}
			var items []*client.Export
			total, after := 0, ""
			for {
				page, err := api.List(cmd.Context(), limit, after)
				if err != nil {
					return err
				}
				items, total, after = append(items, page.Items...), page.Total, page.Next
				if !all || after == "" {
					break
				}
			}
			out := cmd.OutOrStdout()
			if g.json() {
				raws := make([]any, 0, len(items))
				for _, e := range items {
					raws = append(raws, e.Raw)
				}
				return printJSON(out, map[string]any{"items": raws, "total": total})
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tKIND\tFORMAT\tSTATE\tPROGRESS\tCREATED")
			for _, e := range items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%%\t%s\n", e.ID, e.Kind, e.Format, e.State, e.Progress.Percent, e.CreatedAt)
			}
			_ = tw.Flush()
			if len(items) < total {
				fmt.Fprintf(out, "(%d of %d; --all lists every one)\n", len(items), total)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "exports per page (1 to 1000)")
	cmd.Flags().BoolVar(&all, "all", false, "every export, page after page")
	return cmd
}

func newCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel EXPORT_ID",
		Short: "Cancel an export that has not ended",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := g.client()
			if err != nil {
				return err
			}
			e, err := api.Cancel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return printJSON(cmd.OutOrStdout(), e.Raw)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Export %s canceled.\n", e.ID)
			return nil
		},
	}
}
