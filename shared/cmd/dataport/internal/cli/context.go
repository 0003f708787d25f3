package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/config"
)

func newContextCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Manage named contexts: a gateway URL and credentials each",
	}
	var (
		c   config.Context
		use bool
	)
	set := &cobra.Command{
		Use:     "set NAME",
		Short:   "Create or change a context",
		Example: "  dataport context set local --url http://127.0.0.1:8080 --user USER_ID --token TOKEN --use",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.loadFile()
			if err != nil {
				return err
			}
			cur := f.Contexts[args[0]]
			// The global --url, --user and --token fill the context.
			for _, v := range []struct {
				dst  *string
				vals []string
			}{
				{&cur.URL, []string{c.URL, g.url}}, {&cur.User, []string{c.User, g.user}}, {&cur.Token, []string{c.Token, g.token}},
			} {
				for _, s := range v.vals {
					if s != "" {
						*v.dst = s
					}
				}
			}
			if cur.URL == "" {
				cur.URL = config.DefaultURL
			}
			f.Contexts[args[0]] = cur
			if use || f.Current == "" {
				f.Current = args[0]
			}
			return g.save(cmd, f, "context %q saved", args[0])
		},
	}
	set.Flags().BoolVar(&use, "use", false, "make it the current context")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the contexts (tokens are not shown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := g.loadFile()
			if err != nil {
				return err
			}
			if g.json() {
				type row struct {
					Name, URL, User string
					Current, Token  bool
				}
				rows := []row{}
				for _, n := range f.Names() {
					c := f.Contexts[n]
					rows = append(rows, row{Name: n, URL: c.URL, User: c.User, Current: n == f.Current, Token: c.Token != ""})
				}
				return printJSON(cmd.OutOrStdout(), rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tURL\tUSER\tTOKEN")
			for _, n := range f.Names() {
				c := f.Contexts[n]
				cur, tok := "", "none"
				if n == f.Current {
					cur = "*"
				}
				if c.Token != "" {
					tok = "set"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cur, n, c.URL, c.User, tok)
			}
			return tw.Flush()
		},
	}
	useCmd := &cobra.Command{
		Use:   "use NAME",
		Short: "Make a context the current one",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.loadFile()
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return withCode(ExitUsage, "no context %q", args[0])
			}
			f.Current = args[0]
			return g.save(cmd, f, "now using context %q", args[0])
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := g.loadFile()
			if err != nil {
				return err
			}
			if _, ok := f.Contexts[args[0]]; !ok {
				return withCode(ExitUsage, "no context %q", args[0])
			}
			delete(f.Contexts, args[0])
			if f.Current == args[0] {
				f.Current = ""
			}
			return g.save(cmd, f, "context %q deleted", args[0])
		},
	}
	complete := func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		f, err := g.loadFile()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		return f.Names(), cobra.ShellCompDirectiveNoFileComp
	}
	useCmd.ValidArgsFunction, del.ValidArgsFunction, set.ValidArgsFunction = complete, complete, complete
	cmd.AddCommand(set, list, useCmd, del)
	return cmd
}

func (g *globals) save(cmd *cobra.Command, f *config.File, format string, args ...any) error {
	p, err := g.path()
	if err != nil {
		return err
	}
	if err := f.Save(p); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if !g.json() {
		fmt.Fprintf(cmd.OutOrStdout(), format+" (%s)\n", append(args, p)...)
	}
	return nil
}
