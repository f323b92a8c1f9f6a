package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
)

func testKey(t testing.TB, i byte) *Key {
	t.Helper()
	seed := bytes.Repeat([]byte{i + 1}, 32)
	k, err := NewKeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeyFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "node.key")
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	got, err := LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(k) || got.PeerID() != k.PeerID() || !bytes.Equal(got.PublicKey(), k.PublicKey()) {
		t.Fatal("loaded key differs from saved key")
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), k.PeerID().String()) {
		t.Fatal("key file comment does not name the peer ID")
	}
	// The file is standard PKCS#8.
	block, _ := pem.Decode(data)
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.(ed25519.PrivateKey).Public().(ed25519.PublicKey), k.PublicKey()) {
		t.Fatal("PKCS#8 content is not the key")
	}
	if err := SaveKey(path, testKey(t, 9)); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("SaveKey over an existing file: got %v, want an ErrExist error", err)
	}
	if again, _ := LoadKey(path); !again.Equal(k) {
		t.Fatal("SaveKey replaced an existing key")
	}
}

func TestLoadKeyRefusesLoosePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	if err := SaveKey(path, testKey(t, 1)); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKey(path)
		if !errors.Is(err, ErrKeyPermissions) {
			t.Fatalf("mode %04o: got %v, want ErrKeyPermissions", mode, err)
		}
		if !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Fatalf("mode %04o: error %q does not say how to fix it", mode, err)
		}
		if _, _, err := GenerateOrLoadKey(path); !errors.Is(err, ErrKeyPermissions) {
			t.Fatalf("GenerateOrLoadKey with mode %04o: got %v, want ErrKeyPermissions", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err != nil {
		t.Fatalf("mode 0400 should load: %v", err)
	}
}

func TestGenerateOrLoadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "client.key")
	k1, created, err := GenerateOrLoadKey(path)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	k2, created, err := GenerateOrLoadKey(path)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	if !k1.Equal(k2) {
		t.Fatal("second call returned another key")
	}
	// A corrupt key file is an error, never silently replaced.
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := GenerateOrLoadKey(path); err == nil {
		t.Fatal("corrupt key file: no error")
	}
	if data, _ := os.ReadFile(path); string(data) != "garbage" {
		t.Fatal("corrupt key file was replaced")
	}
}

func TestParseKeyFileErrors(t *testing.T) {
	good, err := MarshalKeyFile(testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	cases := map[string][]byte{
		"empty":          nil,
		"no PEM":         []byte("hello"),
		"wrong type":     bytes.Replace(good, []byte("PRIVATE KEY"), []byte("PUBLIC KEY"), 2),
		"trailing data":  append(bytes.Clone(good), "extra"...),
		"bad DER":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"ecdsa key":      ecPEM,
		"headers":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: ecDER}),
		"huge":           bytes.Repeat([]byte("#"), maxKeyFileSize+1),
		"truncated body": good[:len(good)-40],
	}
	for name, data := range cases {
		if _, err := ParseKeyFile(data); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := ParseKeyFile(append([]byte("# comment\n"), good...)); err != nil {
		t.Errorf("comment before the block: %v", err)
	}
}

func TestKeyRejectsNonEd25519(t *testing.T) {
	priv, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := KeyFromLibP2P(priv); err == nil {
		t.Fatal("secp256k1 key accepted")
	}
	if _, err := NewKeyFromSeed([]byte{1, 2}); err == nil {
		t.Fatal("short seed accepted")
	}
}

// TestKeyNeverPrintsPrivate formats and logs a key every way a careless caller might and checks that no
// encoding of the private key appears.
func TestKeyNeverPrintsPrivate(t *testing.T) {
	k := testKey(t, 3)
	raw, _ := k.LibP2P().Raw()
	seed := raw[:32]
	secrets := []string{
		hex.EncodeToString(seed), hex.EncodeToString(raw), fmt.Sprint(seed),
		base64.StdEncoding.EncodeToString(seed), base64.StdEncoding.EncodeToString(raw),
	}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
		fmt.Fprintf(&out, verb+"\n", k)
		fmt.Fprintf(&out, verb+"\n", *k)
	}
	js, _ := json.Marshal(k)
	out.Write(js)
	slog.New(slog.NewTextHandler(&out, nil)).Info("key", "key", k)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("key", "key", k, "group", slog.GroupValue(slog.Any("k", k)))
	for _, s := range secrets {
		if strings.Contains(out.String(), s) {
			t.Fatalf("formatted key output contains private key material:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), k.PeerID().String()) {
		t.Fatal("formatted output does not name the peer ID")
	}
}

func TestSignIsDeterministicAndVerifies(t *testing.T) {
	k := testKey(t, 1)
	msg := []byte("p2pbft")
	s1, _ := k.Sign(msg)
	s2, _ := k.Sign(msg)
	if !bytes.Equal(s1, s2) {
		t.Fatal("ed25519 signing is not deterministic")
	}
	if !ed25519.Verify(k.PublicKey(), msg, s1) {
		t.Fatal("crypto/ed25519 rejects the signature")
	}
	id, err := PeerIDFromPublicKey(k.PublicKey())
	if err != nil || id != k.PeerID() {
		t.Fatalf("PeerIDFromPublicKey = %s, %v; want %s", id, err, k.PeerID())
	}
	pub, err := PublicKeyFromPeerID(k.PeerID())
	if err != nil || !bytes.Equal(pub, k.PublicKey()) {
		t.Fatalf("PublicKeyFromPeerID: %x, %v", pub, err)
	}
}
