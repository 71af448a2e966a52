package cowfs

import (
	"context"
	"errors"
	"sync"
)

// ErrClosed reports a call on a workspace that is closing or closed.
var ErrClosed = errors.New("the workspace is closed")

// opGuard tracks the calls (Snapshot, Push, Warmup) that use what Close
// releases: the lower's descriptor, the store, the remote client. Close
// cancels them and waits for them to return before it unmounts and
// releases, so that a call its caller gave up on, still running, never
// reads a descriptor that was closed and perhaps reused for another file.
type opGuard struct {
	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by close; made when first needed
	wg     sync.WaitGroup
}

// begin registers a call. It returns ctx, cancelled also once close
// starts, and the function the call must run when it returns; or
// ErrClosed.
func (g *opGuard) begin(ctx context.Context) (context.Context, func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, nil, ErrClosed
	}
	if g.done == nil {
		g.done = make(chan struct{})
	}
	g.wg.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	done := g.done
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		g.wg.Done()
	}, nil
}

// close refuses new calls, cancels those running and waits for them.
func (g *opGuard) close() {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		if g.done == nil {
			g.done = make(chan struct{})
		}
		close(g.done)
	}
	g.mu.Unlock()
	g.wg.Wait()
}
