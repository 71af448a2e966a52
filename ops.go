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
	mu      sync.Mutex
	closed  bool
	stopped context.Context // done once close starts; made when first needed
	stop    context.CancelFunc
	n       int       // calls running
	idle    sync.Cond // broadcast when n comes to 0; its L is mu, set by init
}

// init makes stopped and ties idle to mu; g.mu is held.
func (g *opGuard) init() {
	if g.stopped == nil {
		g.stopped, g.stop = context.WithCancel(context.Background())
		g.idle.L = &g.mu
	}
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
	g.init()
	g.n++
	ctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(g.stopped, cancel)
	return ctx, func() {
		unhook()
		cancel()
		g.mu.Lock()
		if g.n--; g.n == 0 {
			g.idle.Broadcast()
		}
		g.mu.Unlock()
	}, nil
}

// running reports how many calls are running.
func (g *opGuard) running() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// close refuses new calls, cancels those running and waits for them.
func (g *opGuard) close() {
	g.mu.Lock()
	g.closed = true
	g.init()
	g.stop()
	for g.n > 0 {
		g.idle.Wait()
	}
	g.mu.Unlock()
}
