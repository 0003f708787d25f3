package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/mail"
	"os"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Email is one message with a plain-text body and an HTML alternative.
type Email struct {
	From mail.Address
	To   []mail.Address
	// Subject must be one line; Mailers reject CR and LF in any header.
	Subject string
	// MessageID is the Message-ID without angle brackets. A stable one
	// lets mail clients fold a message sent twice into one.
	MessageID string
	Text      string
	HTML      string
	// Attachments are sent as files after the two bodies.
	Attachments []Attachment
}

// Attachment is one file sent with an Email. Its name and content type
// go into MIME headers and must be one line, like the other headers.
type Attachment struct {
	Name        string
	ContentType string
	Data        []byte
}

// Mailer delivers email. Send returns nil once the server accepted the
// message for every recipient. An error wrapping ErrRejected means the
// server refused it for good (a 5xx reply to a recipient); any other error
// may succeed on a later try. Implementations must be safe for concurrent
// use.
type Mailer interface {
	Send(ctx context.Context, e Email) error
}

// ErrRejected marks a permanent refusal by the mail server.
var ErrRejected = errors.New("notify: rejected by the mail server")

// ErrHeaderInjection is returned for header values with CR or LF, which
// would let a value end its header line and start another.
var ErrHeaderInjection = errors.New("notify: CR or LF in a header value")

// TLS modes of SMTPConfig.TLS.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls"
	TLSImplicit = "tls"
)

// TLSModes lists the accepted TLS modes, for configuration.
func TLSModes() []string { return []string{TLSNone, TLSStartTLS, TLSImplicit} }

// SMTPConfig says how to reach the mail server.
type SMTPConfig struct {
	Host string
	Port int
	// Username and Password enable SMTP AUTH when Username is set; the
	// strongest mechanism the server offers is used, and passwords are
	// never sent in plain text over an unencrypted connection.
	Username string
	Password string
	// TLS is TLSNone, TLSStartTLS (required, not opportunistic) or
	// TLSImplicit (TLS from the first byte, usually port 465).
	TLS string
	// Timeout bounds connecting and each SMTP command (default 15s).
	Timeout time.Duration
	// CAFile is a PEM bundle of the certificate authorities trusted for
	// the server's certificate instead of the system's (a private relay).
	CAFile string
	// InsecureSkipVerify accepts any server certificate. Only for
	// development and tests: it makes TLS worthless against an active
	// attacker.
	InsecureSkipVerify bool
}

// SMTPMailer sends email over SMTP with go-mail, one connection per
// message.
type SMTPMailer struct {
	host string
	opts []gomail.Option
}

// NewSMTPMailer checks cfg and returns a Mailer. It does not connect.
func NewSMTPMailer(cfg SMTPConfig) (*SMTPMailer, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	opts := []gomail.Option{gomail.WithPort(cfg.Port), gomail.WithTimeout(cfg.Timeout)}
	tlsCfg := &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify} //nolint:gosec // opt-in, dev and test only
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("notify: SMTP CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("notify: SMTP CA file %s holds no PEM certificate", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	opts = append(opts, gomail.WithTLSConfig(tlsCfg))
	switch cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	default:
		return nil, fmt.Errorf("notify: SMTP TLS mode %q (want one of %s)", cfg.TLS, strings.Join(TLSModes(), "|"))
	}
	if cfg.Username != "" {
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password))
	}
	// Build one client now so bad settings fail at start, not per message.
	if _, err := gomail.NewClient(cfg.Host, opts...); err != nil {
		return nil, fmt.Errorf("notify: SMTP client for %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	return &SMTPMailer{host: cfg.Host, opts: opts}, nil
}

// Send delivers e. A fresh client per message keeps concurrent sends apart.
func (m *SMTPMailer) Send(ctx context.Context, e Email) error {
	if err := checkHeaders(e); err != nil {
		return err
	}
	msg := gomail.NewMsg()
	msg.FromMailAddress(&e.From)
	to := make([]*mail.Address, len(e.To))
	for i := range e.To {
		to[i] = &e.To[i]
	}
	msg.ToMailAddress(to...)
	msg.Subject(e.Subject)
	if e.MessageID != "" {
		msg.SetMessageIDWithValue(e.MessageID)
	} else {
		msg.SetMessageID()
	}
	msg.SetDate()
	msg.SetBodyString(gomail.TypeTextPlain, e.Text)
	msg.AddAlternativeString(gomail.TypeTextHTML, e.HTML)
	for _, a := range e.Attachments {
		var opts []gomail.FileOption
		if a.ContentType != "" {
			opts = append(opts, gomail.WithFileContentType(gomail.ContentType(a.ContentType)))
		}
		msg.AttachReadSeeker(a.Name, bytes.NewReader(a.Data), opts...)
	}

	client, err := gomail.NewClient(m.host, m.opts...)
	if err != nil {
		return fmt.Errorf("SMTP client: %w", err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		if se, ok := errors.AsType[*gomail.SendError](err); ok && se.Reason == gomail.ErrSMTPRcptTo && !se.IsTemp() {
			return fmt.Errorf("%w: %w", ErrRejected, err)
		}
		return fmt.Errorf("SMTP send: %w", err)
	}
	return nil
}

func checkHeaders(e Email) error {
	values := []string{e.From.Name, e.From.Address, e.Subject, e.MessageID}
	for _, a := range e.To {
		values = append(values, a.Name, a.Address)
	}
	for _, a := range e.Attachments {
		values = append(values, a.Name, a.ContentType)
	}
	for _, v := range values {
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("%w: %q", ErrHeaderInjection, v)
		}
	}
	return nil
}
