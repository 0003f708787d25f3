// Package client speaks the gateway's native API (/v1/exports...): creating,
// reading, listing and cancelling exports, following their server-sent
// events and downloading their files resumably and verified. Errors the
// API answers are *APIError, carrying the RFC 9457 problem details.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls one gateway as one user. It is safe for concurrent use.
type Client struct {
	// BaseURL is the gateway's address, such as http://127.0.0.1:8080.
	BaseURL string
	// User and Token are the personal access token the native API takes
	// (X-User-Id, X-Auth-Token).
	User, Token string
	// HTTP is the transport; nil means a client without a timeout (event
	// streams last as long as the export).
	HTTP *http.Client
	// UserAgent names the caller in the gateway's logs.
	UserAgent string
}

// Export is a job as the native API shows it.
type Export struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Format    string   `json:"format"`
	State     string   `json:"state"`
	Progress  Progress `json:"progress"`
	Files     []File   `json:"files"`
	Error     string   `json:"error"`
	CreatedAt string   `json:"createdAt"`
	UpdatedAt string   `json:"updatedAt"`
	ExpiresAt string   `json:"expiresAt,omitempty"`
	// FilesExpired says the files were deleted after retention.
	FilesExpired bool   `json:"filesExpired,omitempty"`
	ParentID     string `json:"parentId,omitempty"`
	TraceID      string `json:"traceId,omitempty"`
	// Recurrence is set on a recurring export (a schedule).
	Recurrence *Recurrence `json:"recurrence,omitempty"`
	// Manifest (each file's size, records and SHA-256) and Archive (a
	// room export zipped with its attachments) come with a completed
	// export when it has them.
	Manifest *File `json:"manifest,omitempty"`
	Archive  *File `json:"archive,omitempty"`
	// PartialFiles are what a failed, rejected or canceled export
	// finished before it stopped, downloadable until retention.
	PartialFiles []File `json:"partialFiles,omitempty"`
	// Raw is the answer as the gateway sent it, for -o json.
	Raw json.RawMessage `json:"-"`
}

// Terminal reports whether the export can change no more.
func (e *Export) Terminal() bool {
	switch e.State {
	case "completed", "failed", "rejected", "canceled":
		return true
	}
	return false
}

// Progress is how far an export is.
type Progress struct {
	Percent uint32 `json:"percent"`
	Records uint64 `json:"records"`
	Bytes   uint64 `json:"bytes"`
}

// File is one file of an export (a data file, its manifest or archive,
// or a partial result); URL is its signed link.
type File struct {
	Name      string `json:"name"`
	Size      uint64 `json:"size"`
	Records   uint64 `json:"records"`
	SHA256    string `json:"sha256"`
	URL       string `json:"url,omitempty"`
	ExpiresAt string `json:"expiresAt,omitempty"`
}

// Recurrence is the schedule of a recurring export.
type Recurrence struct {
	Instruction string `json:"instruction"`
	Start       string `json:"start"`
	Next        string `json:"next,omitempty"`
	Runs        uint32 `json:"runs"`
}

// Page is one page of List.
type Page struct {
	Items []*Export `json:"items"`
	Total int       `json:"total"`
	Next  string    `json:"next,omitempty"`
}

// APIError is an error answer of the gateway: an RFC 9457 problem when the
// gateway sent one, else just the status.
type APIError struct {
	Status int
	Title  string
	Detail string
	// Errors names each offending field of a create.
	Errors []FieldError
}

// FieldError is one refused field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	title := e.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	if e.Detail == "" {
		return fmt.Sprintf("%s (HTTP %d)", title, e.Status)
	}
	return fmt.Sprintf("%s: %s (HTTP %d)", title, e.Detail, e.Status)
}

// Create starts an export from body, the JSON of POST /v1/exports. A
// non-empty idempotencyKey makes a retry answer the same export.
func (c *Client) Create(ctx context.Context, body any, idempotencyKey string) (*Export, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if idempotencyKey != "" {
		h.Set("Idempotency-Key", idempotencyKey)
	}
	var out Export
	return &out, c.do(ctx, http.MethodPost, "/v1/exports", h, data, &out)
}

// Get returns one export.
func (c *Client) Get(ctx context.Context, id string) (*Export, error) {
	var out Export
	return &out, c.do(ctx, http.MethodGet, "/v1/exports/"+url.PathEscape(id), nil, nil, &out)
}

// List returns one page of the caller's exports, newest first; after is
// the Next of the previous page.
func (c *Client) List(ctx context.Context, limit int, after string) (*Page, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if after != "" {
		q.Set("after", after)
	}
	path := "/v1/exports"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var raw struct {
		Items []json.RawMessage `json:"items"`
		Total int               `json:"total"`
		Next  string            `json:"next"`
	}
	if err := c.do(ctx, http.MethodGet, path, nil, nil, &raw); err != nil {
		return nil, err
	}
	page := &Page{Total: raw.Total, Next: raw.Next}
	for _, item := range raw.Items {
		e, err := decodeExport(item)
		if err != nil {
			return nil, err
		}
		page.Items = append(page.Items, e)
	}
	return page, nil
}

// Cancel cancels an export that has not ended.
func (c *Client) Cancel(ctx context.Context, id string) (*Export, error) {
	var out Export
	return &out, c.do(ctx, http.MethodPost, "/v1/exports/"+url.PathEscape(id)+"/cancel", nil, nil, &out)
}

func decodeExport(data []byte) (*Export, error) {
	var e Export
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("decode export: %w", err)
	}
	e.Raw = append(json.RawMessage(nil), data...)
	return &e, nil
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// newRequest builds a request to path on the gateway with the caller's
// credentials.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if c.User != "" {
		req.Header.Set("X-User-Id", c.User)
	}
	if c.Token != "" {
		req.Header.Set("X-Auth-Token", c.Token)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	return req, nil
}

// do sends a request and decodes a 2xx answer into *Export or out.
func (c *Client) do(ctx context.Context, method, path string, h http.Header, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := c.newRequest(ctx, method, path, rd)
	if err != nil {
		return err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		return problemOf(resp, data)
	}
	if e, ok := out.(*Export); ok {
		d, err := decodeExport(data)
		if err != nil {
			return err
		}
		*e = *d
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// problemOf reads an error answer: the problem details if it is one, else
// a short excerpt of the body as the detail.
func problemOf(resp *http.Response, data []byte) error {
	e := &APIError{Status: resp.StatusCode}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var p struct {
			Title  string       `json:"title"`
			Detail string       `json:"detail"`
			Errors []FieldError `json:"errors"`
		}
		if json.Unmarshal(data, &p) == nil && (p.Title != "" || p.Detail != "") {
			e.Title, e.Detail, e.Errors = p.Title, p.Detail, p.Errors
			return e
		}
	}
	if s := strings.TrimSpace(string(data)); s != "" && len(s) < 200 && !strings.ContainsAny(s, "<{") {
		e.Detail = s
	}
	return e
}

// IsStatus reports whether err is an APIError with the status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}
