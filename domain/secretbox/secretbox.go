// Package secretbox encrypts secret values with envelope encryption:
// AES-256-GCM under a data key per secret, the data key itself wrapped by
// the master key. The wrapped key is stored in its own stream, so deleting
// that stream makes every value sealed under it unreadable for good
// (crypto-shredding), without touching the immutable secret stream.
//
// Each ciphertext is bound to its secret's ID as associated data, so a sealed
// value copied into another secret's events does not open.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// KeySize is the size of master and data keys: AES-256.
const KeySize = 32

// ErrOpen is returned when a value or key does not decrypt: wrong key,
// wrong secret, or tampered bytes. It never says more, on purpose.
var ErrOpen = errors.New("secretbox: value does not decrypt")

// Keyring holds the master key.
type Keyring struct {
	master cipher.AEAD
}

// New makes a keyring from a 32-byte master key.
func New(masterKey []byte) (*Keyring, error) {
	if len(masterKey) != KeySize {
		return nil, fmt.Errorf("secretbox: master key is %d bytes; want %d", len(masterKey), KeySize)
	}
	aead, err := newAEAD(masterKey)
	if err != nil {
		return nil, err
	}
	return &Keyring{master: aead}, nil
}

// NewDataKey makes a fresh data key for a secret and returns it together
// with its wrapped form for storage.
func (k *Keyring) NewDataKey(secretID string) (dataKey, wrapped []byte, err error) {
	dataKey = make([]byte, KeySize)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, nil, fmt.Errorf("secretbox: data key: %w", err)
	}
	wrapped, err = seal(k.master, dataKey, secretID)
	return dataKey, wrapped, err
}

// Unwrap recovers a secret's data key from its wrapped form.
func (k *Keyring) Unwrap(secretID string, wrapped []byte) ([]byte, error) {
	return open(k.master, wrapped, secretID)
}

// Seal encrypts a value of a secret under its data key.
func Seal(dataKey []byte, secretID string, plaintext []byte) ([]byte, error) {
	aead, err := newAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	return seal(aead, plaintext, secretID)
}

// Open decrypts a value sealed by Seal.
func Open(dataKey []byte, secretID string, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	return open(aead, sealed, secretID)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return cipher.NewGCM(block)
}

// seal returns nonce || ciphertext.
func seal(aead cipher.AEAD, plaintext []byte, secretID string) ([]byte, error) {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secretbox: nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(secretID)), nil
}

func open(aead cipher.AEAD, sealed []byte, secretID string) ([]byte, error) {
	if len(sealed) < aead.NonceSize() {
		return nil, ErrOpen
	}
	nonce, ciphertext := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	plaintext, err := aead.Open(nil, nonce, ciphertext, []byte(secretID))
	if err != nil {
		return nil, ErrOpen
	}
	return plaintext, nil
}
