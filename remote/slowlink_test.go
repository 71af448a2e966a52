package remote_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// slowLink is a TCP proxy on loopback that moves at most rate bytes a
// second each way: a master behind a thin link.
func slowLink(t *testing.T, upstream string, rate int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		defer dst.Close()
		const piece = 16 << 10
		buf := make([]byte, piece)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return l.Addr().String()
}

// A batch that takes longer than the call's bounds over a thin link, but
// moves all along, arrives whole: the bounds are on silence, not on size.
func TestGetManySlowLink(t *testing.T) {
	exp := t.TempDir()
	var ds []object.Digest
	var want [][]byte
	for i := range 4 {
		data := randBytes(object.ChunkSize)
		writeFile(t, filepath.Join(exp, "f"+string(rune('a'+i))), data, 0o644)
		b, err := object.EncodeBlob(data)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, object.Sum(b))
		want = append(want, b)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	// The master stores what it exports at its first resolve.
	warm, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := warm.Resolve(ctx, ""); err != nil {
		t.Fatal(err)
	}

	// 4 MiB at 1 MiB/s: four seconds, more than Timeout; a piece every
	// quarter second, well within CallTimeout on a loaded machine.
	addr := slowLink(t, ms.Addr, 1<<20)
	c, err := remote.Dial(remote.ClientConfig{Addr: addr, CallTimeout: 2 * time.Second, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([][]byte, len(ds))
	err = c.GetMany(ctx, ds, func(i int, b []byte, err error) {
		if err != nil {
			t.Errorf("object %d: %v", i, err)
		}
		got[i] = bytes.Clone(b)
	})
	if err != nil {
		t.Fatalf("GetMany over a slow link: %v", err)
	}
	for i := range ds {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("object %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	if n := c.Failures(); n != 0 {
		t.Errorf("%d failures counted for a call that succeeded", n)
	}
}

// A master that stops sending mid-stream is still given up on.
func TestGetManySilentMaster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Accepts and says nothing: not even the HTTP/2 preface.
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go io.Copy(io.Discard, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	c, err := remote.Dial(remote.ClientConfig{Addr: l.Addr().String(), CallTimeout: 300 * time.Millisecond, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = c.GetMany(ctx, []object.Digest{object.Sum([]byte("x"))}, func(int, []byte, error) {})
	if err == nil {
		t.Fatal("GetMany from a silent master succeeded")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("gave up after %v, Timeout is 1s", took)
	}
}
