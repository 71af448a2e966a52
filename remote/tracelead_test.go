package remote_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A replay runs at most its lead (8 MiB of the trace) ahead of the
// furthest entry its task reached: what it fetches is held in memory for
// the task, which would read it back from the store and hash it again
// had the replay run further. A read further on moves the lead with it.
func TestReplayLead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, client := dialedMaster(t)
	master, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	var entries []remote.TraceEntry
	for range 24 {
		enc, err := object.EncodeBlob(remotetest.RandBytes(object.ChunkSize))
		if err != nil {
			t.Fatal(err)
		}
		d, err := master.Put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, remote.TraceEntry{Object: d, Size: int64(len(enc))})
	}
	store, err := object.OpenDirStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewCache(store, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held := func() (n int, which []bool) {
		for _, e := range entries {
			ok, _ := store.Has(ctx, e.Object)
			which = append(which, ok)
			if ok {
				n++
			}
		}
		return n, which
	}
	// settled waits until want entries are held and nothing more comes
	// for a while, and returns which are held.
	settled := func(want int) []bool {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for n, _ := held(); n < want; n, _ = held() {
			if time.Now().After(deadline) {
				t.Fatalf("%d of the trace's entries held 20 s after the replay began; want %d", n, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		n, which := held()
		if n != want {
			t.Fatalf("%d of the trace's entries held; want %d, the replay's lead", n, want)
		}
		return which
	}

	c.ReplayTrace(entries)
	which := settled(8)
	for i, ok := range which {
		if ok != (i < 8) {
			t.Fatalf("entry %d held: %v before the task read anything; want the first 8 held", i, ok)
		}
	}
	if _, err := c.Get(ctx, entries[15].Object); err != nil {
		t.Fatal(err)
	}
	which = settled(8 + 1 + 8)
	for i, ok := range which {
		if want := i < 8 || i >= 15; ok != want {
			t.Fatalf("entry %d held: %v after the task read entry 15; want entries 0-7 and 15-23", i, ok)
		}
	}
}
