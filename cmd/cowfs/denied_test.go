package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDeniedErrorsHint checks that a refused token and a TLS mismatch
// reach the CLI's output named as such, with what to change, and exit 6.
func TestDeniedErrorsHint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	tok, bad, ca := filepath.Join(dir, "token"), filepath.Join(dir, "bad"), filepath.Join(dir, "ca.pem")
	os.WriteFile(tok, []byte("right\n"), 0o600)
	os.WriteFile(bad, []byte("wrong\n"), 0o600)
	addr := startServe(t, e.lower, "--token-file", tok)
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"wrong token", []string{"--token-file", bad}, []string{"refused the token", "check that --token-file"}},
		{"no token", nil, []string{"refused the token", "sent none", "--token-file"}},
		{"TLS to a plaintext master", []string{"--token-file", tok, "--tls-ca", ca}, []string{"TLS", "does not speak TLS", "leave out --tls-ca"}},
	} {
		if c.name == "TLS to a plaintext master" {
			// Any certificate: the master never shows one.
			writeTestCA(t, ca)
		}
		args := append([]string{"--state", e.state, "mount", e.mnt, "--remote", addr, "--io-timeout", "10s"}, c.args...)
		out, code := run(t, args...)
		if code != exitDenied {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, exitDenied, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output does not say %q: %s", c.name, w, out)
			}
		}
		if mounted(t, e.mnt) {
			t.Fatalf("%s: mounted", c.name)
		}
	}
}

// writeTestCA writes a self-signed CA certificate to path.
func writeTestCA(t *testing.T, path string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cowfs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
