// Command mysafe runs the mysafe secrets service and its tools.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "mysafe",
		Short:         "Store API secrets, share them, take shares back, and prove who could read what and when",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCommand(), tokenCommand())
	root.AddCommand(exportCommand(), auditCommand())
	root.AddCommand(benchCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mysafe:", err)
		os.Exit(1)
	}
}

// envOr is a flag's default: the MYSAFE_* variable when set, else fallback.
func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return fallback
}
