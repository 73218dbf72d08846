// Package mail sends mysafe's e-mails: the links and one-time codes of
// external shares and the notices that one has expired.
//
// A message may hold a link token or an access code, so nothing here ever
// logs a message, and errors never quote one.
package mail

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/smtp"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Message is one e-mail in plain text.
type Message struct {
	To      string
	Subject string
	Body    string
}

// Mailer sends e-mail.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// SMTP sends through an SMTP server.
type SMTP struct {
	addr, host  string
	from        string
	auth        smtp.Auth
	implicitTLS bool
	tls         *tls.Config
}

// NewSMTP configures a mailer from a URL: smtp://[user:pass@]host[:port]
// (port 587 by default; STARTTLS whenever the server offers it) or
// smtps://[user:pass@]host[:port] (TLS from the start, port 465). The
// password is sent only over TLS or to a server on this machine (net/smtp's
// rule for PLAIN authentication). from is the sender address.
func NewSMTP(rawURL, from string) (*SMTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("smtp url: not a URL; want smtp://user:pass@host:port")
	}
	s := &SMTP{host: u.Hostname(), from: from}
	port := u.Port()
	switch u.Scheme {
	case "smtp":
		if port == "" {
			port = "587"
		}
	case "smtps":
		s.implicitTLS = true
		if port == "" {
			port = "465"
		}
	default:
		return nil, fmt.Errorf("smtp url: scheme %q; want smtp or smtps", u.Scheme)
	}
	if s.host == "" {
		return nil, errors.New("smtp url: no host; want smtp://user:pass@host:port")
	}
	if from == "" {
		return nil, errors.New("smtp: a sender address is required")
	}
	s.addr = net.JoinHostPort(s.host, port)
	s.tls = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
	if u.User != nil {
		pass, _ := u.User.Password()
		s.auth = smtp.PlainAuth("", u.User.Username(), pass, s.host)
	}
	return s, nil
}

// Send delivers one message; the context bounds the whole conversation.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	dialer := &net.Dialer{Deadline: deadline}
	var conn net.Conn
	var err error
	if s.implicitTLS {
		conn, err = (&tls.Dialer{NetDialer: dialer, Config: s.tls}).DialContext(ctx, "tcp", s.addr)
	} else {
		conn, err = dialer.DialContext(ctx, "tcp", s.addr)
	}
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	c, err := smtp.NewClient(conn, s.host)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok && !s.implicitTLS {
		if err := c.StartTLS(s.tls); err != nil {
			return fmt.Errorf("smtp: starttls: %w", err)
		}
	}
	if s.auth != nil {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("smtp: the server offers no authentication, but the URL has credentials")
		}
		if err := c.Auth(s.auth); err != nil {
			return fmt.Errorf("smtp: auth: %w", err)
		}
	}
	if err := c.Mail(s.from); err != nil {
		return fmt.Errorf("smtp: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("smtp: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if _, err := w.Write(Format(s.from, m, time.Now())); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	return c.Quit()
}

// Outbox "sends" by writing each message as a file (RFC 5322, .eml) in a
// folder, readable by its owner only: the embedded default, for a service
// run without a mail server.
type Outbox struct {
	dir, from string
}

// NewOutbox returns an outbox writing into dir, made if missing.
func NewOutbox(dir, from string) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return &Outbox{dir: dir, from: from}, nil
}

// Dir is the outbox folder.
func (o *Outbox) Dir() string { return o.dir }

// Send writes the message to a new file, named so that files sort by time.
func (o *Outbox) Send(_ context.Context, m Message) error {
	now := time.Now().UTC()
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	name := now.Format("20060102T150405.000000000Z") + "-" + hex.EncodeToString(suffix[:]) + ".eml"
	path := filepath.Join(o.dir, name)
	// Written under a temporary name and renamed, so a reader never sees
	// half a message.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, Format(o.from, m, now), 0o600); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// Format renders a message as RFC 5322 text: UTF-8, quoted-printable.
func Format(from string, m Message, now time.Time) []byte {
	var b bytes.Buffer
	header := func(name, value string) {
		// Header values come from addresses and subjects we build; a line
		// break in one would start a new header.
		value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
		fmt.Fprintf(&b, "%s: %s\r\n", name, value)
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	header("From", from)
	header("To", m.To)
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", "<"+hex.EncodeToString(id[:])+"@mysafe>")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	body := strings.ReplaceAll(m.Body, "\n", "\r\n")
	if !strings.HasSuffix(body, "\r\n") {
		body += "\r\n" // SMTP's DATA ends the message with a line break anyway
	}
	_, _ = qp.Write([]byte(body))
	_ = qp.Close()
	return b.Bytes()
}

// Body decodes the body of a message written by Format: for tests and for
// reading the outbox.
func Body(raw []byte) (string, error) {
	_, body, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		return "", errors.New("mail: no body")
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(quotedprintable.NewReader(bytes.NewReader(body))); err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.ReplaceAll(out.String(), "\r\n", "\n"), "\n"), nil
}
