//go:build !linux

package bolt

import (
	"errors"

	"go.etcd.io/bbolt"
)

// releaseMappedPages is a no-op off Linux (see release_linux.go).
func releaseMappedPages(*bbolt.DB) error { return nil }

// residentFileBytes is unknown off Linux, so the release never happens.
func residentFileBytes() (int64, error) { return 0, errors.ErrUnsupported }
