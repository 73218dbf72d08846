package mail_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mysafe/mysafe/http/mail"
	"github.com/mysafe/mysafe/http/mail/mailtest"
)

func TestSMTPConversation(t *testing.T) {
	srv := mailtest.Start(t)
	m, err := mail.NewSMTP(srv.URL(), "mysafe@example.com")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := "Your code: 12345678\nÜnïcode and a long line " + strings.Repeat("x", 100)
	if err := m.Send(ctx, mail.Message{To: "rita@example.com", Subject: "MySafe - your authentication token", Body: body}); err != nil {
		t.Fatal(err)
	}
	got := srv.WaitFor(t, "rita@example.com", 1)
	if got.From != "mysafe@example.com" || got.Body != body || got.Subject != "MySafe - your authentication token" {
		t.Fatalf("received from %q subject %q body %q", got.From, got.Subject, got.Body)
	}

	// Wrong credentials are refused, and say so without the password.
	bad, _ := mail.NewSMTP(strings.Replace(srv.URL(), mailtest.Password, "wrong", 1), "mysafe@example.com")
	err = bad.Send(ctx, mail.Message{To: "rita@example.com", Subject: "x", Body: "x"})
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("send with a wrong password: %v", err)
	}
}

func TestNewSMTPRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"http://host", "smtp://", "::"} {
		if _, err := mail.NewSMTP(u, "a@b.c"); err == nil {
			t.Errorf("NewSMTP(%q) accepted", u)
		}
	}
}

func TestOutboxWritesOneFilePerMessage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	o, err := mail.NewOutbox(dir, "mysafe@localhost")
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []string{"11111111", "22222222"} {
		if err := o.Send(context.Background(), mail.Message{To: "rita@example.com", Subject: "code", Body: "Your code: " + code}); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 2 {
		t.Fatalf("outbox holds %v, %v; want 2 files", entries, err)
	}
	info, _ := entries[0].Info()
	if info.Mode().Perm() != 0o600 {
		t.Errorf("outbox file mode %v; want 0600", info.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, entries[1].Name()))
	if body, err := mail.Body(raw); err != nil || body != "Your code: 22222222" {
		t.Errorf("second file body %q, %v", body, err)
	}
}
