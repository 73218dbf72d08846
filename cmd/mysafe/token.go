package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	api "github.com/mysafe/mysafe/http"
)

func tokenCommand() *cobra.Command {
	var (
		dataDir string
		id      api.Identity
		role    string
		ttl     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a bearer token for a user, signed with the data dir's key",
		Long: `Print a bearer token for a user, and nothing else, on standard output.
The token is signed with the key in the data dir, so serve the same data dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ensureDataDir(dataDir); err != nil {
				return err
			}
			key, _, err := loadOrCreateKey(filepath.Join(dataDir, signingKeyFile))
			if err != nil {
				return err
			}
			id.Role = api.Role(role)
			token, err := api.IssueToken(key, id, ttl, time.Now())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", envOr("MYSAFE_DATA_DIR", "./mysafe-data"), "data dir whose signing key signs the token (env MYSAFE_DATA_DIR)")
	f.StringVar(&id.UserID, "user", "", "user ID (required)")
	f.StringVar(&id.Name, "name", "", "display name")
	f.StringVar(&id.Email, "email", "", "e-mail address")
	f.StringVar(&role, "role", string(api.RoleUser), "role: user, admin or auditor")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}
