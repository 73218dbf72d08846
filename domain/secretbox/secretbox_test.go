package secretbox_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mysafe/mysafe/domain/secretbox"
)

func TestSealOpenRoundTrip(t *testing.T) {
	ring, err := secretbox.New(bytes.Repeat([]byte{7}, secretbox.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	dataKey, wrapped, err := ring.NewDataKey("s1")
	if err != nil {
		t.Fatal(err)
	}
	plaintext := []byte("client-secret-value")
	sealed, err := secretbox.Seal(dataKey, "s1", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plaintext) || bytes.Contains(wrapped, dataKey) {
		t.Fatal("sealed bytes hold the plaintext")
	}
	unwrapped, err := ring.Unwrap("s1", wrapped)
	if err != nil {
		t.Fatal(err)
	}
	got, err := secretbox.Open(unwrapped, "s1", sealed)
	if err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("Open = %q, %v", got, err)
	}

	// A value moved to another secret, a tampered byte, or another master
	// key: none of them opens.
	if _, err := secretbox.Open(unwrapped, "s2", sealed); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("open under another secret's ID: %v; want ErrOpen", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := secretbox.Open(unwrapped, "s1", sealed); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("open tampered: %v; want ErrOpen", err)
	}
	other, _ := secretbox.New(bytes.Repeat([]byte{8}, secretbox.KeySize))
	if _, err := other.Unwrap("s1", wrapped); !errors.Is(err, secretbox.ErrOpen) {
		t.Errorf("unwrap under another master key: %v; want ErrOpen", err)
	}
}

func TestMasterKeySize(t *testing.T) {
	if _, err := secretbox.New(make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte master key was accepted")
	}
}
