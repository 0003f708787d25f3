// Package cli is the dataport command: cobra commands over package client,
// with contexts from package config, human or JSON output, progress bars
// on stderr and an exit code per kind of failure.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"dataport.dev/shared/cmd/dataport/internal/client"
	"dataport.dev/shared/cmd/dataport/internal/config"
)

// Exit codes, one per kind of failure, so scripts can tell them apart.
const (
	ExitOK       = 0
	ExitError    = 1 // anything else: the network, local files
	ExitUsage    = 2 // bad command line or configuration
	ExitAuth     = 3 // 401/403: credentials missing, wrong or not allowed
	ExitNotFound = 4 // 404/410: no such export (or not yours), expired link
	ExitInvalid  = 5 // 400/413/422: the request was refused, see its fields
	ExitConflict = 6 // 409, or an export not in a state for it (not finished yet)
	ExitLimited  = 7 // 429: a quota or rate limit; try later
	ExitServer   = 8 // 5xx: the gateway or what is behind it failed
	ExitFailed   = 9 // the export ended failed, rejected or canceled
	ExitChecksum = 10
)

const exitCodesHelp = `Exit codes:
   0  success
   1  other errors (network, local files)
   2  bad command line or configuration
   3  authentication: credentials missing or wrong, or not allowed (401, 403)
   4  not found: no such export, or not yours; or an expired link (404, 410)
   5  invalid request: the API refused it, naming the fields (400, 413, 422)
   6  conflict: the export is not in a state for it (409, or not completed yet)
   7  limited: a quota or rate limit; try again later (429)
   8  server error (5xx)
   9  the export ended failed, rejected or canceled
  10  a downloaded file does not match its SHA-256`

// App is what the commands read and write; main passes the process's.
type App struct {
	// Getenv reads the environment (main passes os.Getenv); nil: an
	// empty environment, so nothing reads the process's by accident.
	Getenv         func(string) string
	Stdout, Stderr io.Writer
	Version        string
	// HTTP is the transport; nil: http.DefaultClient.
	HTTP *http.Client
}

// codeError carries an exit code for an error that is not an API answer.
type codeError struct {
	code int
	err  error
}

func (e codeError) Error() string { return e.err.Error() }
func (e codeError) Unwrap() error { return e.err }

func withCode(code int, format string, args ...any) error {
	return codeError{code: code, err: fmt.Errorf(format, args...)}
}

// Run runs the command line args and returns the exit code.
func Run(ctx context.Context, args []string, app App) int {
	root := newRoot(&app)
	root.SetArgs(args)
	root.SetOut(app.Stdout)
	root.SetErr(app.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	report(app.Stderr, err)
	return exitCode(err)
}

// report prints err as a person should read it: the problem's title and
// detail, then each refused field.
func report(w io.Writer, err error) {
	fmt.Fprintln(w, "dataport:", err)
	var ae *client.APIError
	if errors.As(err, &ae) {
		for _, f := range ae.Errors {
			fmt.Fprintf(w, "  %s: %s\n", f.Field, f.Message)
		}
		switch ae.Status {
		case http.StatusUnauthorized:
			fmt.Fprintln(w, "  set credentials with 'dataport context set' or DATAPORT_USER and DATAPORT_TOKEN")
		case http.StatusTooManyRequests:
			fmt.Fprintln(w, "  try again later")
		}
	}
}

func exitCode(err error) int {
	var ce codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	var ae *client.APIError
	if errors.As(err, &ae) {
		switch s := ae.Status; {
		case s == http.StatusUnauthorized || s == http.StatusForbidden:
			return ExitAuth
		case s == http.StatusNotFound || s == http.StatusGone:
			return ExitNotFound
		case s == http.StatusConflict:
			return ExitConflict
		case s == http.StatusTooManyRequests:
			return ExitLimited
		case s >= 500:
			return ExitServer
		case s >= 400:
			return ExitInvalid
		}
		return ExitError
	}
	if errors.Is(err, client.ErrChecksum) {
		return ExitChecksum
	}
	if isUsage(err) {
		return ExitUsage
	}
	return ExitError
}

// isUsage recognises cobra's and pflag's complaints about the command
// line, which are plain errors.
func isUsage(err error) bool {
	var ne *net.OpError
	if errors.As(err, &ne) {
		return false
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "required flag", "if any flags in the group"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// globals are the flags every command takes.
type globals struct {
	app        *App
	context    string
	url        string
	user       string
	token      string
	output     string
	configPath string
	noProgress bool
}

func newRoot(app *App) *cobra.Command {
	g := &globals{app: app}
	root := &cobra.Command{
		Use:   "dataport",
		Short: "Start, follow and download Dataport exports",
		Long: `dataport talks to a Dataport gateway's native API: it starts room, my-data
and record exports, follows them live (status --watch), downloads their files
resumably and verifies each against its SHA-256.

Where and who: a named context from the config file
($XDG_CONFIG_HOME/dataport/config.json, or $DATAPORT_CONFIG), chosen with
--context, $DATAPORT_CONTEXT or 'dataport context use'; DATAPORT_URL,
DATAPORT_USER and DATAPORT_TOKEN override it, and --url, --user and --token
override those. The native API takes a user id and a personal access token
(the X-User-Id and X-Auth-Token headers). Without any, the gateway of
'make run' (` + config.DefaultURL + `) is used.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       app.Version,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.context, "context", "", "context of the config file to use")
	pf.StringVar(&g.url, "url", "", "gateway URL (overrides the context and DATAPORT_URL)")
	pf.StringVar(&g.user, "user", "", "user id (overrides the context and DATAPORT_USER)")
	pf.StringVar(&g.token, "token", "", "personal access token (overrides the context and DATAPORT_TOKEN)")
	pf.StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	pf.StringVar(&g.configPath, "config", "", "config file (default $XDG_CONFIG_HOME/dataport/config.json)")
	pf.BoolVar(&g.noProgress, "no-progress", false, "no progress bars on stderr")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = root.RegisterFlagCompletionFunc("context", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		f, err := g.loadFile()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		return f.Names(), cobra.ShellCompDirectiveNoFileComp
	})
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if g.output != "text" && g.output != "json" {
			return withCode(ExitUsage, "--output must be text or json, not %q", g.output)
		}
		return nil
	}
	root.AddCommand(newExportCmd(g), newStatusCmd(g), newListCmd(g), newCancelCmd(g), newDownloadCmd(g), newContextCmd(g))
	return root
}

func (g *globals) getenv(k string) string {
	if g.app.Getenv == nil {
		return ""
	}
	return g.app.Getenv(k)
}

func (g *globals) path() (string, error) {
	if g.configPath != "" {
		return g.configPath, nil
	}
	p, err := config.Path(g.getenv)
	if err != nil {
		return "", withCode(ExitUsage, "%w", err)
	}
	return p, nil
}

func (g *globals) loadFile() (*config.File, error) {
	p, err := g.path()
	if err != nil {
		return nil, err
	}
	f, err := config.Load(p)
	if err != nil {
		return nil, withCode(ExitUsage, "read config: %w", err)
	}
	return f, nil
}

// client is the API client for the resolved context.
func (g *globals) client() (*client.Client, error) {
	f, err := g.loadFile()
	if err != nil {
		return nil, err
	}
	c, _, err := f.Resolve(g.context, g.getenv)
	if err != nil {
		return nil, withCode(ExitUsage, "%w", err)
	}
	if g.url != "" {
		c.URL = g.url
	}
	if g.user != "" {
		c.User = g.user
	}
	if g.token != "" {
		c.Token = g.token
	}
	return &client.Client{BaseURL: c.URL, User: c.User, Token: c.Token, HTTP: g.app.HTTP, UserAgent: "dataport-cli/" + g.app.Version}, nil
}

func (g *globals) json() bool { return g.output == "json" }

// printJSON writes v as indented JSON, or raw as it came from the API.
func printJSON(w io.Writer, v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err == nil {
			_, err = fmt.Fprintln(w, buf.String())
			return err
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
