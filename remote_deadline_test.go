package cowfs_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// tcpRelay forwards TCP to a master until silenced; from then on it
// accepts connections and holds them, forwarding nothing: a master that
// is hung, or a firewall that drops packets.
type tcpRelay struct {
	addr     string
	mu       sync.Mutex
	silent   bool
	conns    []net.Conn
	upstream string
}

func startRelay(t testing.TB, upstream string) *tcpRelay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRelay{addr: l.Addr().String(), upstream: upstream}
	t.Cleanup(func() {
		l.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns = append(r.conns, c)
			silent := r.silent
			r.mu.Unlock()
			if silent {
				continue
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, up)
			r.mu.Unlock()
			go r.pipe(up, c)
			go r.pipe(c, up)
		}
	}()
	return r
}

// pipe copies until the relay is silenced; then it holds both ends open
// and moves nothing.
func (r *tcpRelay) pipe(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		r.mu.Lock()
		silent := r.silent
		r.mu.Unlock()
		if silent {
			return
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				dst.Close()
			}
			return
		}
	}
}

func (r *tcpRelay) silence() {
	r.mu.Lock()
	r.silent = true
	r.mu.Unlock()
}

// A read of what is not cached fails with EIO within --io-timeout (and a
// little slack), whatever the master does: gone (connection refused) or
// hung (the connection open, nothing answered). Every wait under the read
// (retries, the cache's lock, read-ahead, the kernel's retry of the page)
// shares the one deadline.
func TestReadBoundByIOTimeout(t *testing.T) {
	if testing.Short() {
		// Each case waits out a 10 s --io-timeout twice; TestMasterGone
		// has reads from a stopped master fail with EIO under -short.
		t.Skip("waits out --io-timeout; the full suite runs it")
	}
	t.Parallel()
	const timeout = 10 * time.Second
	// Slack for a loaded machine, short of the 2x a second wait would take.
	bound := timeout*3/2 + time.Second
	for _, how := range []string{"stopped", "silent"} {
		t.Run(how, func(t *testing.T) {
			exp := t.TempDir()
			writeFile(t, filepath.Join(exp, "opened"), randBytes(32<<20), 0o644)
			writeFile(t, filepath.Join(exp, "closed"), randBytes(8<<20), 0o644)
			ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
			addr := ms.Addr
			var relay *tcpRelay
			if how == "silent" {
				relay = startRelay(t, ms.Addr)
				addr = relay.addr
			}
			rm := mountRemote(remotetest.NewWorker(t), addr, remotetest.ViewOptions{Timeout: timeout})
			f, err := os.Open(filepath.Join(rm.dir, "opened"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// A reader in order: read-ahead, the kernel's and cowfs's,
			// has the next chunks asked for when the master goes.
			// On a loaded machine a fetch can take longer than the
			// short --io-timeout here while the master is up; what is
			// tested is the bound once it is gone, so a read before
			// that is tried again.
			buf := make([]byte, 128<<10)
			warm := time.Now().Add(60 * time.Second)
			for off := int64(0); off < 2<<20; {
				if _, err := f.ReadAt(buf, off); err != nil {
					if time.Now().After(warm) {
						t.Fatal(err)
					}
					continue
				}
				off += int64(len(buf))
			}
			if _, err := f.Seek(2<<20, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			if how == "stopped" {
				ms.Stop()
			} else {
				relay.silence()
			}
			for i, c := range []struct {
				what string
				read func() error
			}{
				{"reading on in an open file", func() error {
					for {
						if _, err := io.ReadFull(f, buf); err != nil {
							return err
						}
					}
				}},
				{"whole read of a file not yet opened", func() error {
					_, err := os.ReadFile(filepath.Join(rm.dir, "closed"))
					return err
				}},
			} {
				if i > 0 {
					// Past the memory of the last failure: each read
					// asks.
					time.Sleep(2500 * time.Millisecond)
				}
				start := time.Now()
				err := within(t, 60*time.Second, c.what, c.read)
				took := time.Since(start)
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("%s: %v, want EIO", c.what, err)
				}
				if took > bound {
					t.Errorf("%s took %v; --io-timeout %v allows %v", c.what, took.Round(time.Millisecond), timeout, bound)
				}
				t.Logf("%s: %v after %v", c.what, err, took.Round(time.Millisecond))
			}
		})
	}
}
