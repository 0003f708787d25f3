package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// createBody is the JSON of POST /v1/exports (the OpenAPI document's
// CreateExport); empty options are left out so the gateway's defaults
// apply.
type createBody struct {
	Kind      string         `json:"kind"`
	Format    string         `json:"format,omitempty"`
	Name      string         `json:"name,omitempty"`
	Room      *roomBody      `json:"room,omitempty"`
	UserData  *userDataBody  `json:"userData,omitempty"`
	Records   *recordsBody   `json:"records,omitempty"`
	Recurring *recurringBody `json:"recurring,omitempty"`
	Notify    *notifyBody    `json:"notify,omitempty"`
}

type roomBody struct {
	ID   string `json:"id"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

type userDataBody struct {
	FullExport bool `json:"fullExport"`
}

type recordsBody struct {
	OrganizationID string         `json:"organizationId,omitempty"`
	Resource       string         `json:"resource"`
	Fields         []string       `json:"fields,omitempty"`
	Filter         string         `json:"filter,omitempty"`
	Sort           string         `json:"sort,omitempty"`
	Q              string         `json:"q,omitempty"`
	DateRange      *dateRangeBody `json:"dateRange,omitempty"`
	Chunking       *chunkingBody  `json:"chunking,omitempty"`
}

type dateRangeBody struct {
	Start string `json:"start"`
	End   string `json:"end"`
	Field string `json:"field,omitempty"`
}

type chunkingBody struct {
	MaxRows  uint64 `json:"maxRows,omitempty"`
	MaxBytes uint64 `json:"maxBytes,omitempty"`
	Gzip     bool   `json:"gzip,omitempty"`
}

type recurringBody struct {
	Instruction string `json:"instruction"`
	Start       string `json:"start,omitempty"`
}

type notifyBody struct {
	Emails   []string `json:"emails,omitempty"`
	Webhooks []string `json:"webhooks,omitempty"`
}

// common are the options of every kind of export.
type common struct {
	format, name, idempotencyKey string
	emails, webhooks             []string
	watch                        bool
	download                     string
}

func (c *common) flags(cmd *cobra.Command, formats string) {
	f := cmd.Flags()
	f.StringVarP(&c.format, "format", "f", "", "file format: "+formats)
	f.StringVar(&c.name, "name", "", "a name for the export")
	f.StringArrayVar(&c.emails, "email", nil, "email this address when the export ends (repeatable)")
	f.StringArrayVar(&c.webhooks, "webhook", nil, "POST the outcome to this http(s) URL (repeatable)")
	f.StringVar(&c.idempotencyKey, "idempotency-key", "", "retrying with the same key answers the same export")
	f.BoolVarP(&c.watch, "watch", "w", false, "follow the export with a progress bar until it ends")
	f.StringVar(&c.download, "download", "", "follow the export, then download its files into this directory")
}

func (c *common) body(kind string) createBody {
	b := createBody{Kind: kind, Format: c.format, Name: c.name}
	if len(c.emails) > 0 || len(c.webhooks) > 0 {
		b.Notify = &notifyBody{Emails: c.emails, Webhooks: c.webhooks}
	}
	return b
}

func newExportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Start an export: room, my-data or records",
	}
	cmd.AddCommand(newExportRoomCmd(g), newExportMyDataCmd(g), newExportRecordsCmd(g))
	return cmd
}

func newExportRoomCmd(g *globals) *cobra.Command {
	var (
		c        common
		from, to string
	)
	cmd := &cobra.Command{
		Use:   "room ROOM_ID",
		Short: "Export a room's history (needs the permission to export rooms)",
		Example: `  dataport export room GENERAL --format html --from 2024-01-01 --watch
  dataport export room GENERAL --download ./out`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b := c.body("room")
			b.Room = &roomBody{ID: args[0], From: from, To: to}
			return g.create(cmd, b, &c)
		},
	}
	c.flags(cmd, "json (default), html, jsonl (one message per line) or csv.gz")
	cmd.Flags().StringVar(&from, "from", "", "first day (YYYY-MM-DD) or instant (RFC 3339); default: the beginning")
	cmd.Flags().StringVar(&to, "to", "", "last day (YYYY-MM-DD) or instant (RFC 3339); default: now")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"json", "html", "jsonl", "csv.gz"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newExportMyDataCmd(g *globals) *cobra.Command {
	var (
		c    common
		full bool
	)
	cmd := &cobra.Command{
		Use:     "my-data",
		Short:   "Export your own data (messages, files, profile)",
		Example: `  dataport export my-data --full --format json --watch`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := c.body("user-data")
			b.UserData = &userDataBody{FullExport: full}
			return g.create(cmd, b, &c)
		},
	}
	c.flags(cmd, "html (default), or json with --full")
	cmd.Flags().BoolVar(&full, "full", false, "the full export (with files), instead of messages only")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"html", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newExportRecordsCmd(g *globals) *cobra.Command {
	var (
		c                     common
		r                     recordsBody
		start, end, dateField string
		maxRows, maxBytes     uint64
		gzip                  bool
		every, everyStart     string
	)
	cmd := &cobra.Command{
		Use:   "records RESOURCE",
		Short: "Export records: transactions, events, messages, rooms or users",
		Example: `  dataport export records transactions --format csv --fields id,amount,currency \
    --filter 'status:approved' --sort -createdTime --start '-7 days' --end now --watch
  dataport export records events --max-rows 100000 --gzip
  dataport export records events --every 'FREQ=DAILY;BYHOUR=6' --email ops@example.com`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"transactions", "events", "messages", "rooms", "users"},
		RunE: func(cmd *cobra.Command, args []string) error {
			b := c.body("records")
			r.Resource = args[0]
			if start != "" || end != "" || dateField != "" {
				r.DateRange = &dateRangeBody{Start: start, End: end, Field: dateField}
			}
			if maxRows > 0 || maxBytes > 0 || gzip {
				r.Chunking = &chunkingBody{MaxRows: maxRows, MaxBytes: maxBytes, Gzip: gzip}
			}
			b.Records = &r
			if every != "" {
				b.Recurring = &recurringBody{Instruction: every, Start: everyStart}
			} else if everyStart != "" {
				return withCode(ExitUsage, "--every-start needs --every")
			}
			return g.create(cmd, b, &c)
		},
	}
	c.flags(cmd, "csv (default), json, json-api, xml, pdf or jsonl")
	f := cmd.Flags()
	f.StringVar(&r.OrganizationID, "org", "", "organization (default: your default organization)")
	f.StringSliceVar(&r.Fields, "fields", nil, "fields to export, comma-separated (default: all)")
	f.StringVar(&r.Filter, "filter", "", "filter, such as 'status:approved,declined;currency:USD'")
	f.StringVar(&r.Sort, "sort", "", "sort, such as -createdTime")
	f.StringVar(&r.Q, "q", "", "full-text search")
	f.StringVar(&start, "start", "", "date range start, such as '-7 days' or 2024-01-01 (with --end)")
	f.StringVar(&end, "end", "", "date range end, such as now or 2024-01-31 (with --start)")
	f.StringVar(&dateField, "date-field", "", "the field the date range applies to (default createdTime)")
	f.Uint64Var(&maxRows, "max-rows", 0, "split into files of at most this many rows (at least 100)")
	f.Uint64Var(&maxBytes, "max-bytes", 0, "split into files of at most this many bytes (at least 65536)")
	f.BoolVar(&gzip, "gzip", false, "gzip each file")
	f.StringVar(&every, "every", "", "make it recurring: an RRULE such as 'FREQ=DAILY;BYHOUR=6'")
	f.StringVar(&everyStart, "every-start", "", "first occurrence of a recurring export (RFC 3339)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"csv", "json", "json-api", "xml", "pdf", "jsonl"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// create sends the export and, as asked, follows and downloads it.
func (g *globals) create(cmd *cobra.Command, b createBody, c *common) error {
	api, err := g.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	e, err := api.Create(ctx, b, c.idempotencyKey)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	switch {
	case g.json() && !c.watch && c.download == "":
		return printJSON(out, e.Raw)
	case !g.json():
		what := e.Kind
		if e.Format != "" {
			what += ", " + e.Format
		}
		if e.Recurrence != nil {
			fmt.Fprintf(out, "Recurring export %s created (%s, %s); each run is an export of its own.\n", e.ID, what, e.Recurrence.Instruction)
			return nil
		}
		fmt.Fprintf(out, "Export %s created (%s).\n", e.ID, what)
		if !c.watch && c.download == "" {
			fmt.Fprintf(out, "Follow it:   dataport status %s --watch\nDownload it: dataport download %s\n", e.ID, e.ID)
			return nil
		}
	}
	if e.Recurrence != nil {
		return nil
	}
	final, err := g.watch(cmd, api, e.ID)
	if err != nil || c.download == "" {
		return err
	}
	return g.downloadAll(cmd, api, final, c.download, which{})
}
