package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// delayCmd forwards TCP connections from listen to target, holding the
// bytes of each direction for delay before passing them on, so that a
// client sees a round trip of twice delay more than loopback's: a
// network between a worker and its master, where the kernel has no netem
// to make one. With rate (bytes a second; 0: no bound) each direction
// is also a link of that speed: bytes leave it no faster, one
// connection's after another's. Bytes keep their order. It serves until
// killed.
func delayCmd(listen, target string, delay time.Duration, rate float64) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	up, down := &link{rate: rate}, &link{rate: rate}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			t, err := net.Dial("tcp", target)
			if err != nil {
				fmt.Fprintln(os.Stderr, "benchtool delay:", err)
				c.Close()
				return
			}
			done := make(chan struct{}, 2)
			go func() { delayPipe(t, c, delay, up); done <- struct{}{} }()
			go func() { delayPipe(c, t, delay, down); done <- struct{}{} }()
			<-done
			<-done
			c.Close()
			t.Close()
		}()
	}
}

// A delayed is bytes read from one side and when to write them.
type delayed struct {
	b   []byte
	due time.Time
}

// A link is one direction's wire, shared by every connection: with a
// rate, bytes are sent one after another at that rate.
type link struct {
	rate float64
	mu   sync.Mutex
	free time.Time // when the bytes sent so far have left
}

// sent returns when n bytes handed to the link now have left it.
func (l *link) sent(n int) time.Time {
	now := time.Now()
	if l.rate == 0 {
		return now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// The bytes wait for those handed to it before.
	l.free = later(l.free, now).Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.free
}

// delayPipe copies src to dst over l, each read's bytes written delay
// after they left it, then closes dst's write side.
func delayPipe(dst, src net.Conn, delay time.Duration, l *link) {
	// Room for far more than a round trip's bytes at loopback's speed,
	// so that the delay, not this queue, bounds what is in flight.
	q := make(chan delayed, 4096)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 64<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- delayed{b[:n], l.sent(n).Add(delay)}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
					fmt.Fprintln(os.Stderr, "benchtool delay:", err)
				}
				return
			}
		}
	}()
	for d := range q {
		if w := time.Until(d.due); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(d.b); err != nil {
			// Drain, so that the reader above never blocks on a full q.
			for range q {
			}
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
