package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

func TestToken(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), []byte("x"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{Token: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tok := range []string{"", "wrong", "s3cret2", "s3cre"} {
		c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Token: tok, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Resolve(ctx, "")
		if !errors.Is(err, remote.ErrUnauthenticated) {
			t.Errorf("token %q: %v, want refused", tok, err)
		}
		c.Close()
	}
	vw := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{Token: "s3cret"})
	if b, err := readAll(t, vw.Lower, "f", 20*time.Second); err != nil || string(b) != "x" {
		t.Errorf("with the token: %q, %v", b, err)
	}
}

// --prefetch: once done, the mount works with the master gone.
func TestPrefetch(t *testing.T) {
	exp := t.TempDir()
	want := map[string][]byte{}
	for i := range 20 {
		p := fmt.Sprintf("d%d/f%d", i%4, i)
		n := i * 30 << 10
		if i%7 == 6 {
			n = 2*object.ChunkSize + i // a file of several chunks
		}
		want[p] = randBytes(n)
		writeFile(t, filepath.Join(exp, p), want[p], 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	rm := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	rm.Cache.PrefetchVersion(rm.Root.Object)
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := rm.Cache.Progress()
		if p.State == "done" {
			if p.Files != 19 || p.ChunksDone != p.Chunks {
				t.Errorf("progress at the end: %+v", p)
			}
			break
		}
		if p.State == "failed" || time.Now().After(deadline) {
			t.Fatalf("prefetch: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ms.Stop()
	for p, c := range want {
		if b, err := readAll(t, rm.Lower, p, 20*time.Second); err != nil || !bytes.Equal(b, c) {
			t.Errorf("%s with the master gone after prefetch: %d bytes, %v", p, len(b), err)
		}
	}
}

// A cache told what to call while it fetches (the mount process's extra
// P) calls it for a cold read and ends it once the reads have paused; a
// read of what it holds begins nothing.
func TestFetchingHook(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3<<20 + 1)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	var h remote.HookCounter
	v.Cache.SetFetching(h.Begin)
	counts := h.Counts
	if b, err := readAll(t, v.Lower, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("cold read: %d bytes, %v", len(b), err)
	}
	if b, _ := counts(); b == 0 {
		t.Fatal("a cold read began no fetching")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, e := counts(); b == e {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("fetching began %d times and ended %d times 10 s after the read", b, e)
		}
	}
	b0, _ := counts()
	if b, err := readAll(t, v.Lower, "f", time.Minute); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("warm read: %d bytes, %v", len(b), err)
	}
	if b, _ := counts(); b != b0 {
		t.Errorf("a read of held chunks began fetching")
	}
}
