package remote_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

func TestTLS(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("over tls"), 0o644)
	caFile, cert := newCA(t)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Token: "tok", TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})

	vw := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{Token: "tok", CAFile: caFile})
	if b, err := readAll(t, vw.Lower, "f", 20*time.Second); err != nil || string(b) != "over tls" {
		t.Errorf("read over TLS: %q, %v", b, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	otherCA, _ := newCA(t)
	for name, cfg := range map[string]remote.ClientConfig{
		"plaintext":     {Addr: ms.Addr, Token: "tok"},
		"another CA":    {Addr: ms.Addr, Token: "tok", CAFile: otherCA},
		"TLS, no token": {Addr: ms.Addr, CAFile: caFile},
	} {
		cfg.Timeout = 2 * time.Second
		c, err := remote.Dial(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Resolve(ctx, ""); err == nil {
			t.Errorf("%s: resolve worked", name)
		}
		c.Close()
	}
}
