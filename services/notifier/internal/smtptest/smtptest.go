// Package smtptest runs a real SMTP server (github.com/emersion/go-smtp)
// on a loopback port for tests, keeps every message it accepts and can be
// told to refuse messages with a given reply code, as a busy or strict mail
// server would.
package smtptest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	// From and To are the envelope (MAIL FROM, RCPT TO).
	From string
	To   []string
	// Data is the message as received, headers and body.
	Data []byte
	// TLS says whether the message came over an encrypted connection.
	TLS bool
}

// Server is a running SMTP server owned by one test.
type Server struct {
	Host string
	Port int
	// CAFile is the PEM file of the self-signed certificate of a server
	// started with StartTLS; empty otherwise.
	CAFile string

	mu       sync.Mutex
	messages []Message
	attempts int
	dataFail failure
	rcptFail failure
}

// failure refuses the next n commands of one kind with code; n < 0 means
// every one.
type failure struct {
	n    int
	code int
}

func (f *failure) take() *smtp.SMTPError {
	if f.n == 0 {
		return nil
	}
	if f.n > 0 {
		f.n--
	}
	return &smtp.SMTPError{Code: f.code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: fmt.Sprintf("smtptest: refused with %d", f.code)}
}

// TLS modes of StartTLS.
const (
	// STARTTLS offers the STARTTLS extension on a plain connection.
	STARTTLS = "starttls"
	// Implicit speaks TLS from the first byte (SMTPS, port 465 style).
	Implicit = "tls"
)

// Start runs a plain-text server until the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, "")
}

// StartTLS runs a server with a fresh self-signed certificate for
// 127.0.0.1 and "localhost", in the given mode (STARTTLS or Implicit).
// The certificate's PEM is in the returned server's CAFile.
func StartTLS(tb testing.TB, mode string) *Server {
	tb.Helper()
	return start(tb, mode)
}

func start(tb testing.TB, mode string) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("smtptest: listen: %v", err)
	}
	s := &Server{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{srv: s, conn: c}, nil
	}))
	if mode != "" {
		cfg, caFile, err := selfSigned(tb.TempDir())
		if err != nil {
			tb.Fatalf("smtptest: certificate: %v", err)
		}
		s.CAFile = caFile
		switch mode {
		case STARTTLS:
			srv.TLSConfig = cfg
		case Implicit:
			ln = tls.NewListener(ln, cfg)
		default:
			tb.Fatalf("smtptest: unknown TLS mode %q", mode)
		}
	}
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

// FailData makes the next n messages fail at the end of DATA with code
// (e.g. 451 for a temporary, 554 for a permanent failure); n < 0 fails all.
func (s *Server) FailData(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataFail = failure{n: n, code: code}
}

// FailRcpt makes the next n RCPT TO commands fail with code; n < 0 fails
// all.
func (s *Server) FailRcpt(n, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcptFail = failure{n: n, code: code}
}

// Messages returns the accepted messages, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Attempts counts MAIL FROM commands: every try at sending a message,
// accepted or not.
func (s *Server) Attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

type session struct {
	srv  *Server
	conn *smtp.Conn
	msg  Message
}

func (ss *session) Reset()        { ss.msg = Message{} }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	ss.srv.attempts++
	_, secure := ss.conn.TLSConnectionState()
	ss.msg = Message{From: from, TLS: secure}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	if err := ss.srv.rcptFail.take(); err != nil {
		return err
	}
	ss.msg.To = append(ss.msg.To, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.srv.mu.Lock()
	defer ss.srv.mu.Unlock()
	if err := ss.srv.dataFail.take(); err != nil {
		return err
	}
	ss.msg.Data = data
	ss.srv.messages = append(ss.srv.messages, ss.msg)
	return nil
}

// Parsed is a message as a mail client shows it.
type Parsed struct {
	Header mail.Header
	// Text and HTML are the decoded bodies of the text/plain and
	// text/html parts (or of the single body).
	Text string
	HTML string
	// Attachments are the parts sent as files (Content-Disposition
	// attachment), in order.
	Attachments []Attachment
}

// Attachment is one file of a message.
type Attachment struct {
	Name        string
	ContentType string
	Data        []byte
}

// Parse decodes m's headers, its text and HTML bodies and its
// attachments, through nested multiparts (multipart/mixed holding a
// multipart/alternative, as messages with files are built).
func (m Message) Parse() (*Parsed, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return nil, fmt.Errorf("smtptest: read message: %w", err)
	}
	p := &Parsed{Header: msg.Header}
	if err := p.part(textproto.MIMEHeader(msg.Header), msg.Body); err != nil {
		return nil, err
	}
	return p, nil
}

// part takes one MIME part: a body, a file, or a multipart to descend.
func (p *Parsed) part(h textproto.MIMEHeader, body io.Reader) error {
	mediaType, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return fmt.Errorf("smtptest: content type: %w", err)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("smtptest: next part: %w", err)
			}
			// multipart.Reader already undoes quoted-printable (and drops
			// the header); base64 is left to decode.
			if err := p.part(part.Header, part); err != nil {
				return err
			}
		}
	}
	if disp, dparams, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil && disp == "attachment" {
		data, err := decodeBytes(body, h.Get("Content-Transfer-Encoding"))
		if err != nil {
			return err
		}
		name := dparams["filename"]
		if name == "" {
			name = params["name"]
		}
		p.Attachments = append(p.Attachments, Attachment{Name: name, ContentType: mediaType, Data: data})
		return nil
	}
	text, err := decode(body, h.Get("Content-Transfer-Encoding"))
	if err != nil {
		return err
	}
	switch mediaType {
	case "text/plain":
		p.Text = text
	case "text/html":
		p.HTML = text
	}
	return nil
}

func decodeBytes(r io.Reader, encoding string) ([]byte, error) {
	switch strings.ToLower(encoding) {
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("smtptest: decode %s part: %w", encoding, err)
	}
	return b, nil
}

func decode(r io.Reader, encoding string) (string, error) {
	b, err := decodeBytes(r, encoding)
	if err != nil {
		return "", err
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n"), nil
}

// selfSigned makes a certificate for 127.0.0.1 and localhost and writes it
// as PEM to dir.
func selfSigned(dir string) (*tls.Config, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	caFile := filepath.Join(dir, "smtptest-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		return nil, "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, "", err
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, "", err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, caFile, nil
}
