package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	api "github.com/mysafe/mysafe/http"
	"github.com/mysafe/mysafe/http/mail"
)

// shareFlags are serve's flags for e-mail and temporary external shares.
// The zero value means the defaults, for serve's callers without flags.
type shareFlags struct {
	smtpURL, smtpFrom, publicURL string
	enabled                      *bool // nil: enabled
	max, check                   time.Duration
}

func (f *shareFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.smtpURL, "smtp-url", envOr("MYSAFE_SMTP_URL", ""), "SMTP server for e-mail, smtp://user:pass@host:port (STARTTLS when offered) or smtps://...; empty writes each message as a file in <data-dir>/outbox (env MYSAFE_SMTP_URL)")
	fs.StringVar(&f.smtpFrom, "smtp-from", envOr("MYSAFE_SMTP_FROM", "mysafe@localhost"), "sender address of mysafe's e-mail (env MYSAFE_SMTP_FROM)")
	fs.StringVar(&f.publicURL, "public-url", envOr("MYSAFE_PUBLIC_URL", ""), "base URL of the links mailed to external recipients, e.g. https://mysafe.example.com; empty uses the host the sharer's request named (env MYSAFE_PUBLIC_URL)")
	f.enabled = fs.Bool("external-shares", envBool("MYSAFE_EXTERNAL_SHARES", true), "allow temporary external shares; false refuses new ones and stops links already sent (env MYSAFE_EXTERNAL_SHARES)")
	fs.DurationVar(&f.max, "external-share-max", envDuration("MYSAFE_EXTERNAL_SHARE_MAX", api.DefaultExternalShareMax), "longest an external share may last (env MYSAFE_EXTERNAL_SHARE_MAX)")
	fs.DurationVar(&f.check, "external-share-check", time.Minute, "how often expired external shares are recorded as expired and their recipients told")
}

// mailer is SMTP when configured, else the outbox in the data dir.
func (f *shareFlags) mailer(dataDir string) (mail.Mailer, string, error) {
	if f.smtpURL != "" {
		m, err := mail.NewSMTP(f.smtpURL, f.smtpFrom)
		if err != nil {
			return nil, "", fmt.Errorf("--smtp-url: %w", err)
		}
		return m, "smtp", nil
	}
	from := f.smtpFrom
	if from == "" {
		from = "mysafe@localhost"
	}
	o, err := mail.NewOutbox(filepath.Join(dataDir, "outbox"), from)
	if err != nil {
		return nil, "", err
	}
	return o, "outbox " + o.Dir(), nil
}

func (f *shareFlags) config() api.ExternalShareConfig {
	return api.ExternalShareConfig{Disabled: f.enabled != nil && !*f.enabled, Max: f.max, PublicURL: f.publicURL}
}

func envBool(name string, fallback bool) bool {
	if v, err := strconv.ParseBool(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

func envDuration(name string, fallback time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}
