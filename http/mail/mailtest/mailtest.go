// Package mailtest runs an SMTP server in the test process (emersion's
// go-smtp), requiring PLAIN authentication, and keeps what it receives, so
// tests hold a real SMTP conversation and read the mail that arrived.
package mailtest

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mysafe/mysafe/http/mail"
)

// User and Password are the credentials the server accepts.
const (
	User     = "mysafe"
	Password = "s3cret-smtp"
)

// Received is one message as the server got it.
type Received struct {
	From    string
	To      []string
	Raw     []byte
	Subject string
	Body    string // decoded
}

// Server is a running SMTP server.
type Server struct {
	addr    string
	mu      sync.Mutex
	msgs    []Received
	arrived chan struct{} // closed and replaced on each message
}

// Start starts a server on a random port, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{arrived: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{srv: s}, nil }))
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true // on 127.0.0.1; net/smtp sends PLAIN only there without TLS
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// URL is the smtp:// URL of the server, with its credentials.
func (s *Server) URL() string { return "smtp://" + User + ":" + Password + "@" + s.addr }

// Messages returns what arrived so far, in order.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.msgs...)
}

// WaitFor waits until n messages to the address have arrived and returns
// the n-th (1-based).
func (s *Server) WaitFor(t testing.TB, to string, n int) Received {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		var got []Received
		for _, m := range s.msgs {
			for _, rcpt := range m.To {
				if strings.EqualFold(rcpt, to) {
					got = append(got, m)
				}
			}
		}
		arrived := s.arrived
		s.mu.Unlock()
		if len(got) >= n {
			return got[n-1]
		}
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("mail %d to %s did not arrive; %d did", n, to, len(got))
		}
	}
}

type session struct {
	srv    *Server
	authed bool
	from   string
	to     []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != User || pass != Password {
			return errors.New("bad credentials")
		}
		s.authed = true
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	body, err := mail.Body(raw)
	if err != nil {
		return err
	}
	subject := ""
	for _, line := range strings.Split(string(raw), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Subject: "); ok {
			subject = v
			break
		}
		if line == "" {
			break
		}
	}
	s.srv.mu.Lock()
	s.srv.msgs = append(s.srv.msgs, Received{From: s.from, To: s.to, Raw: raw, Subject: subject, Body: body})
	close(s.srv.arrived)
	s.srv.arrived = make(chan struct{})
	s.srv.mu.Unlock()
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
