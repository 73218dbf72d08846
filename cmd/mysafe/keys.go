package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mysafe/mysafe/domain/secretbox"
)

// Files of the data dir that hold keys.
const (
	masterKeyFile  = "master.key"
	signingKeyFile = "token-signing.key"
)

// loadOrCreateKey reads a 32-byte key file, creating it with mode 0600 the
// first time. created tells whether it was made now.
func loadOrCreateKey(path string) (key []byte, created bool, err error) {
	key, err = os.ReadFile(path)
	if err == nil {
		if len(key) != secretbox.KeySize {
			return nil, false, fmt.Errorf("key file %s holds %d bytes; want %d", path, len(key), secretbox.KeySize)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key = make([]byte, secretbox.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	// Write a temporary file and rename it into place, so that a crash never
	// leaves a truncated key behind.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		return nil, false, err
	}
	if _, err := tmp.Write(key); err != nil {
		return nil, false, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, false, err
	}
	if err := tmp.Close(); err != nil {
		return nil, false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// masterKey comes from MYSAFE_MASTER_KEY (base64 of 32 bytes) or from the
// key file in the data dir.
func masterKey(dataDir string) ([]byte, error) {
	if v := os.Getenv("MYSAFE_MASTER_KEY"); v != "" {
		key, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(key) != secretbox.KeySize {
			return nil, fmt.Errorf("MYSAFE_MASTER_KEY must be the base64 of %d random bytes (openssl rand -base64 32)", secretbox.KeySize)
		}
		return key, nil
	}
	key, _, err := loadOrCreateKey(filepath.Join(dataDir, masterKeyFile))
	return key, err
}

// ensureDataDir makes the data dir, readable by its owner only.
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	return nil
}
