package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"dataport.dev/shared/egress"
)

// Webhook headers. The signature is "v1=" + hex HMAC-SHA256, keyed with
// the webhook secret, of "<timestamp>.<body>"; receivers recompute it,
// compare in constant time and reject timestamps too far from now.
const (
	HeaderTimestamp = "X-Dataport-Timestamp"
	HeaderSignature = "X-Dataport-Signature"
	HeaderEventID   = "X-Dataport-Event-Id"
)

// ErrWebhookRefused marks a webhook Dataport will not call: a malformed or
// non-HTTP URL, or one that leads to an address the SSRF guard (package
// egress, which the gateway also checks new exports' webhooks with)
// forbids. No retry can change that.
var ErrWebhookRefused = egress.ErrRefused

// WebhookConfig configures Webhooks.
type WebhookConfig struct {
	// Secret keys the signatures.
	Secret []byte
	// URLs are told about every job, in addition to each job's own.
	URLs []string
	// Allow lists hosts (exact names) and CIDR prefixes that may be
	// called although they are loopback, private, link-local and so on.
	Allow []string
	// Timeout bounds one request, connection included (default 10s).
	Timeout time.Duration
}

// Webhooks signs and posts webhook events. Every connection is checked
// when it is dialed, after DNS resolution, so a name that resolves (or
// re-resolves, DNS rebinding) to a forbidden address is refused too.
// Redirects are not followed: a 3xx answer is a failed delivery. It is safe
// for concurrent use.
type Webhooks struct {
	secret  []byte
	global  []string
	guard   *egress.Guard
	guarded *http.Client
	open    *http.Client
}

// NewWebhooks checks cfg and returns Webhooks.
func NewWebhooks(cfg WebhookConfig) (*Webhooks, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("notify: webhook secret is empty")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	w := &Webhooks{secret: cfg.Secret, guard: egress.NewGuard(cfg.Allow)}
	for _, u := range cfg.URLs {
		if u = strings.TrimSpace(u); u != "" {
			if _, err := egress.CheckURL(u); err != nil {
				return nil, fmt.Errorf("notify: global webhook URL: %w", err)
			}
			w.global = append(w.global, u)
		}
	}
	w.guarded = newHTTPClient(cfg.Timeout, w.guard.Control)
	w.open = newHTTPClient(cfg.Timeout, nil)
	return w, nil
}

func newHTTPClient(timeout time.Duration, control func(network, address string, c syscall.RawConn) error) *http.Client {
	d := &net.Dialer{Timeout: timeout, Control: control}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			// No proxy from the environment: a proxy would make the dial
			// go to the proxy's address, past the guard.
			Proxy:               nil,
			DialContext:         d.DialContext,
			TLSHandshakeTimeout: timeout,
			MaxIdleConns:        16,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// URLs returns the webhooks of a job: the global ones, then the job's own,
// without repeats.
func (w *Webhooks) URLs(jobURLs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, u := range append(append([]string(nil), w.global...), jobURLs...) {
		if u = strings.TrimSpace(u); u != "" && !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out
}

// Sign returns the signature header value of body sent at timestamp ts
// (Unix seconds): "v1=" + hex HMAC-SHA256(secret, ts + "." + body).
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1=" + hex.EncodeToString(m.Sum(nil))
}

// Post sends body to rawURL, signed with timestamp now. It returns nil for
// a 2xx answer, an error wrapping ErrWebhookRefused for URLs that will
// never be called, and any other error for a failure worth retrying.
func (w *Webhooks) Post(ctx context.Context, rawURL, eventID string, body []byte, now time.Time) error {
	u, err := egress.CheckURL(rawURL)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrWebhookRefused, err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Dataport-Webhook/1")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(w.secret, ts, body))
	req.Header.Set(HeaderEventID, eventID)
	client := w.guarded
	if w.guard.AllowsHost(u.Hostname()) {
		client = w.open
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Drained (a little) so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// WebhookEvent is the JSON body of a webhook call.
type WebhookEvent struct {
	// Event is export.completed, export.failed or export.canceled.
	Event string `json:"event"`
	JobID string `json:"jobId"`
	// State is the job's state: completed, failed, rejected or canceled.
	State string        `json:"state"`
	Files []WebhookFile `json:"files"`
	// Error says why the job failed or was canceled; empty otherwise.
	Error      string `json:"error"`
	OccurredAt string `json:"occurredAt"`
}

// WebhookFile is one downloadable file of a completed job.
type WebhookFile struct {
	Name string `json:"name"`
	// URL is a signed download link, valid until ExpiresAt.
	URL       string `json:"url"`
	ExpiresAt string `json:"expiresAt"`
	SHA256    string `json:"sha256"`
	Size      uint64 `json:"size"`
}

// webhookFor builds the call of one webhook URL. The body depends only on
// the event (links expire LinkTTL after the job ended), so every retry
// sends the same bytes; only the timestamp and signature change.
func (n *Notifier) webhookFor(o outcome, rawURL string) notification {
	shown := egress.RedactURL(rawURL)
	nt := notification{
		channel:    webhookChannel(rawURL),
		recipients: []string{shown},
		what:       "webhook " + shown,
		refused:    func(err error) bool { return errors.Is(err, ErrWebhookRefused) },
	}
	if _, err := egress.CheckURL(rawURL); err != nil {
		nt.problem = fmt.Sprintf("webhook %s refused: %v", shown, err)
		return nt
	}
	at := o.at
	if at.IsZero() || at.Unix() <= 0 {
		at = n.now()
	}
	ev := WebhookEvent{JobID: o.jobID, Files: []WebhookFile{}, OccurredAt: at.UTC().Format(time.RFC3339)}
	switch {
	case o.completed != nil:
		ev.Event, ev.State = "export.completed", "completed"
		exp := time.Unix(at.Add(n.linkTTL).Unix(), 0).UTC()
		for _, f := range o.completed.GetFiles() {
			ev.Files = append(ev.Files, WebhookFile{
				Name:      f.GetName(),
				URL:       n.links.URLUntil(o.jobID, f.GetName(), exp),
				ExpiresAt: exp.Format(time.RFC3339),
				SHA256:    f.GetSha256(),
				Size:      f.GetSize(),
			})
		}
	case o.failed != nil:
		ev.Event, ev.State, ev.Error = "export.failed", "failed", o.failed.GetReason()
		if o.failed.GetRejected() {
			ev.State = "rejected"
		}
	default:
		ev.Event, ev.State, ev.Error = "export.canceled", "canceled", o.canceled.GetReason()
	}
	body, err := json.Marshal(ev)
	if err != nil {
		nt.problem = fmt.Sprintf("webhook %s: encode event: %v", shown, err)
		return nt
	}
	eventID := o.jobID + "." + string(o.event)
	nt.send = func(ctx context.Context) error { return n.webhooks.Post(ctx, rawURL, eventID, body, n.now()) }
	return nt
}
