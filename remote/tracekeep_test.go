package remote_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A master keeps the last trace put for a subtree and snapshot and gives
// it back; what is not a whole trace, or names a path or snapshot a
// worker may not name, is refused and changes nothing.
func TestMasterKeepsTraces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, c := dialedMaster(t)

	if _, err := c.GetTrace(ctx, "", ""); !errors.Is(err, remote.ErrNoTrace) {
		t.Fatalf("GetTrace before any was put: %v; want ErrNoTrace", err)
	}
	tr := &remote.Trace{Version: object.Sum([]byte("v1"))}
	for i := range 100 {
		tr.Entries = append(tr.Entries, remote.TraceEntry{Object: object.Sum([]byte{byte(i)}), Size: int64(1000 + i)})
	}
	if err := c.PutTrace(ctx, "", "", tr); err != nil {
		t.Fatal(err)
	}
	other := &remote.Trace{Version: tr.Version, Entries: tr.Entries[:3]}
	if err := c.PutTrace(ctx, "spiders/quotes", "", other); err != nil {
		t.Fatal(err)
	}
	if err := c.PutTrace(ctx, "", "crawl-1", other); err != nil {
		t.Fatal(err)
	}
	get := func(sub, snap string, want *remote.Trace) {
		t.Helper()
		got, err := c.GetTrace(ctx, sub, snap)
		if err != nil || !bytes.Equal(remote.EncodeTrace(got), remote.EncodeTrace(want)) {
			t.Fatalf("GetTrace(%q, %q): %v; want the trace put for it, %d entries", sub, snap, err, len(want.Entries))
		}
	}
	get("", "", tr)
	get("spiders/quotes", "", other)
	get("", "crawl-1", other)
	if _, err := c.GetTrace(ctx, "spiders", ""); !errors.Is(err, remote.ErrNoTrace) {
		t.Errorf("GetTrace of a subtree nothing was put for: %v; want ErrNoTrace", err)
	}

	// Refused, and the traces kept stay as they were.
	files := func() []string {
		ents, err := os.ReadDir(ms.Config.Traces)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	before := files()
	whole := remote.EncodeTrace(tr)
	for name, put := range map[string]func() error{
		"a path out of the export": func() error { return c.PutTrace(ctx, "../x", "", tr) },
		"an absolute path":         func() error { return c.PutTrace(ctx, "/etc", "", tr) },
		"a snapshot name with a slash": func() error {
			return c.PutTrace(ctx, "", "a/b", tr)
		},
		"a trace cut short": func() error { return remote.PutTraceBytes(ctx, c, "", "", whole[:len(whole)/2]) },
		"garbage":           func() error { return remote.PutTraceBytes(ctx, c, "", "", []byte("cowfs-trace 1\nversion x\nend 0\n")) },
	} {
		if err := put(); err == nil {
			t.Errorf("PutTrace of %s: no error", name)
		}
	}
	if after := files(); len(after) != len(before) {
		t.Errorf("refused puts left %d traces on the master, %d before", len(after), len(before))
	}
	get("", "", tr)
	if _, err := c.GetTrace(ctx, "../x", ""); err == nil || errors.Is(err, remote.ErrNoTrace) {
		t.Errorf("GetTrace of a path out of the export: %v; want it refused", err)
	}

	// A master with nowhere to keep traces gives none and takes none.
	bare := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	bare.Stop()
	bare.Config.Traces = ""
	bare.Restart()
	bc, err := remote.Dial(remote.ClientConfig{Addr: bare.Addr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if err := bc.PutTrace(ctx, "", "", tr); err == nil {
		t.Error("a master that keeps no traces took one")
	}
	if _, err := bc.GetTrace(ctx, "", ""); !errors.Is(err, remote.ErrNoTrace) {
		t.Errorf("GetTrace from a master that keeps none: %v; want ErrNoTrace", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(bare.Config.Objects), "traces")); !os.IsNotExist(err) {
		t.Errorf("a master that keeps no traces made their directory (%v)", err)
	}
}

// A master keeps the traces put last, up to its bound, and removes what a
// put cut short by a crash left.
func TestMasterTracesBounded(t *testing.T) {
	defer remote.SetMaxTraces(remote.SetMaxTraces(3))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, c := dialedMaster(t)
	tr := &remote.Trace{Version: object.Sum([]byte("v")), Entries: []remote.TraceEntry{{Object: object.Sum([]byte("o")), Size: 1}}}
	subs := []string{"a", "b", "c", "d", "e"}
	for i, sub := range subs {
		if err := c.PutTrace(ctx, sub, "", tr); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			remotetest.WriteFile(t, filepath.Join(ms.Config.Traces, ".trace-1234"), []byte("cowfs-tr"), 0o600)
		}
		time.Sleep(10 * time.Millisecond) // distinct times
	}
	for i, sub := range subs {
		_, err := c.GetTrace(ctx, sub, "")
		if old := i < 2; old != errors.Is(err, remote.ErrNoTrace) || !old && err != nil {
			t.Errorf("GetTrace(%q), put %d of %d with a bound of 3: %v", sub, i+1, len(subs), err)
		}
	}
	ents, err := os.ReadDir(ms.Config.Traces)
	if err != nil || len(ents) != 3 {
		t.Errorf("%d files kept (%v); want the 3 traces put last, nothing else", len(ents), err)
	}
}

// dialedMaster starts a master of an empty export and dials it; both
// stop on cleanup.
func dialedMaster(t *testing.T) (*remotetest.Master, *remote.Client) {
	t.Helper()
	ms := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ms, c
}
