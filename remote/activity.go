package remote

import (
	"sync"
	"time"
)

// fetchLinger is how long the cache counts as fetching after its last
// fetch ended: a task reading cold files starts the next fetch a moment
// after the last, and the hook's work (a change of GOMAXPROCS, which
// stops the world) should not be paid for each.
const fetchLinger = 100 * time.Millisecond

// SetFetching sets begin, called when the cache starts fetching from its
// source after a pause of fetchLinger or more; what begin returns is
// called once such a pause begins again, or when the cache is closed.
// The mount process gives its runtime one P more meanwhile
// (fs.ExtraProc): what comes in is verified, stored and handed to
// readers beside the requests the mount serves. Fetches that began
// before it was set are not counted.
func (c *Cache) SetFetching(begin func() (end func())) {
	c.activity.mu.Lock()
	defer c.activity.mu.Unlock()
	c.activity.begin = begin
}

// activity tracks whether a cache is fetching, for SetFetching.
type activity struct {
	mu    sync.Mutex
	begin func() func()
	n     int    // fetches under way
	end   func() // what begin returned, until it is called
	timer *time.Timer
}

// start notes a fetch that began; the caller calls what it returns once
// the fetch is over.
func (a *activity) start() (stop func()) {
	a.mu.Lock()
	if a.begin == nil {
		a.mu.Unlock()
		return func() {}
	}
	a.n++
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if a.end == nil {
		a.end = a.begin()
	}
	a.mu.Unlock()
	var once sync.Once
	return func() { once.Do(a.stop) }
}

func (a *activity) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n--; a.n == 0 && a.end != nil {
		a.timer = time.AfterFunc(fetchLinger, a.idle)
	}
}

// idle ends the activity if no fetch began since the pause began. A
// timer that fired as a fetch began and stopped again may end it early:
// the next fetch begins it again.
func (a *activity) idle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == 0 && a.end != nil {
		a.end()
		a.end = nil
	}
}

// close ends the activity, whatever is under way: the cache is closed.
func (a *activity) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
	if a.end != nil {
		a.end()
		a.end = nil
	}
	a.begin = nil
}
