package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// Key files hold one ed25519 private key as a PKCS#8 "PRIVATE KEY" PEM block (the format of
// `openssl genpkey -algorithm ed25519`), preceded by a comment line that names the peer ID. They are
// written with mode 0600, and LoadKey refuses a file that other users can read or write.
const (
	keyPEMType     = "PRIVATE KEY"
	maxKeyFileSize = 16 << 10
	// KeyFileMode is the permission mode of key files.
	KeyFileMode fs.FileMode = 0o600
)

// ErrKeyPermissions is returned (wrapped) by LoadKey for a key file that other users may read or write.
var ErrKeyPermissions = errors.New("key file permissions too open")

// MarshalKeyFile encodes k in the key file format.
func MarshalKeyFile(k *Key) ([]byte, error) {
	raw, err := k.priv.Raw() // ed25519: 32-byte seed || 32-byte public key
	if err != nil {
		return nil, fmt.Errorf("identity: private key bytes: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ed25519.PrivateKey(raw))
	if err != nil {
		return nil, fmt.Errorf("identity: encode PKCS#8: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# p2pbft ed25519 key for peer %s. Keep this file secret (mode 0600).\n", k.id)
	if err := pem.Encode(&b, &pem.Block{Type: keyPEMType, Bytes: der}); err != nil {
		return nil, fmt.Errorf("identity: encode PEM: %w", err)
	}
	return b.Bytes(), nil
}

// ParseKeyFile decodes a key file's contents. Text before the PEM block (comments) is ignored; anything
// but whitespace after it is an error.
func ParseKeyFile(data []byte) (*Key, error) {
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("identity: key file is %d bytes, more than the %d a key file can be", len(data), maxKeyFileSize)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("identity: key file has no PEM block (want -----BEGIN PRIVATE KEY-----)")
	}
	if block.Type != keyPEMType {
		return nil, fmt.Errorf("identity: key file holds a %q PEM block, want %q", block.Type, keyPEMType)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("identity: key file PEM block has headers (encrypted keys are not supported)")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("identity: key file has data after the PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("identity: key file: PKCS#8: %w", err)
	}
	edKey, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("identity: key file holds a %T, want an ed25519 key", parsed)
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(edKey)
	if err != nil {
		return nil, fmt.Errorf("identity: key file: %w", err)
	}
	return KeyFromLibP2P(priv)
}

// LoadKey reads a key file. It refuses a file whose permissions let other users read or write it, with an
// error that says how to fix them.
func LoadKey(path string) (*Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: open key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: stat key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: key file %s is not a regular file", path)
	}
	if err := checkKeyPerm(path, st.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("identity: read key file %s: %w", path, err)
	}
	k, err := ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}

func checkKeyPerm(path string, mode fs.FileMode) error {
	if runtime.GOOS == "windows" {
		return nil // no Unix permission bits to check
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("identity: key file %s has mode %04o, so other users can read or change it: %w; fix it with: chmod 600 %s",
			path, perm, ErrKeyPermissions, path)
	}
	return nil
}

// SaveKey writes k to a new key file with mode 0600, creating the directory (mode 0700) if needed. It never
// overwrites an existing file: losing a node key loses the node's identity.
func SaveKey(path string, k *Key) error {
	data, err := MarshalKeyFile(k)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity: create key directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return fmt.Errorf("identity: create key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := tmp.Chmod(KeyFileMode); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: chmod key file: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("identity: sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("identity: close key file: %w", err)
	}
	// A hard link publishes the complete file atomically and fails if path exists, so a concurrent
	// writer can never replace a key that someone already loaded.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("identity: key file %s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("identity: publish key file: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("identity: open key directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("identity: sync key directory: %w", err)
	}
	return nil
}

// GenerateOrLoadKey loads the key file at path, or, if there is none, generates a key and saves it there.
// created reports which happened. Any other error (bad permissions, a corrupt file) is returned as is:
// a node must never silently replace its identity.
func GenerateOrLoadKey(path string) (k *Key, created bool, err error) {
	k, err = LoadKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err = GenerateKey()
	if err != nil {
		return nil, false, err
	}
	if err := SaveKey(path, k); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created it between our load and save: use theirs.
			k, err = LoadKey(path)
			return k, false, err
		}
		return nil, false, err
	}
	return k, true, nil
}
