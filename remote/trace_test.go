package remote_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A cache records the objects readers get, each once, in the order first
// read, and stops at its bounds: the first objects, not the last.
func TestTraceRecordsInOrderBounded(t *testing.T) {
	exp := t.TempDir()
	const n = 8
	var blobs []object.Digest
	for i := range n {
		b := append([]byte(fmt.Sprintf("file %d\n", i)), randBytes(1000)...)
		writeFile(t, filepath.Join(exp, fmt.Sprintf("f%d", i)), b, 0o644)
		enc, err := object.EncodeBlob(b)
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, object.Sum(enc))
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Read in an order unlike the export's: last to first, each twice.
	order := []int{7, 3, 5, 0, 6, 1, 4, 2}
	read := func(c *remote.Cache) {
		t.Helper()
		for _, i := range order {
			for range 2 {
				if _, err := c.Get(ctx, blobs[i]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	size := int64(len(fmt.Sprintf("file %d\n", 0)) + 1000 + 2) // a blob's header
	for _, c := range []struct {
		name       string
		maxObjects int
		maxBytes   int64
		want       int
	}{
		{"all", 100, 1 << 30, n},
		{"objects", 5, 1 << 30, 5},
		{"bytes", 100, 3 * size, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			vw := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
			vw.Cache.RecordTrace(c.maxObjects, c.maxBytes)
			read(vw.Cache)
			got := vw.Cache.Trace()
			if len(got) != c.want {
				t.Fatalf("trace of %d objects read with bounds %d objects, %d bytes: %d entries; want %d", n, c.maxObjects, c.maxBytes, len(got), c.want)
			}
			for k, e := range got {
				if e.Object != blobs[order[k]] || e.Size != size {
					t.Errorf("entry %d: %s, %d bytes; want %s (f%d), %d bytes", k, e.Object.Short(), e.Size, blobs[order[k]].Short(), order[k], size)
				}
			}
		})
	}
}

// A trace written is read back whole; one cut short, damaged or of
// another format is an error, never a shorter or different trace.
func TestTraceFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "traces", "t")
	want := &remote.Trace{Version: object.Sum([]byte("v"))}
	for i := range 100 {
		want.Entries = append(want.Entries, remote.TraceEntry{Object: object.Sum([]byte{byte(i)}), Size: int64(i * 1000)})
	}
	if err := remote.WriteTrace(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := remote.ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != want.Version || fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) {
		t.Fatalf("read back %s with %d entries; want %s with %d", got.Version.Short(), len(got.Entries), want.Version.Short(), len(want.Entries))
	}
	whole, _ := os.ReadFile(path)
	lines := strings.SplitAfter(string(whole), "\n")
	for name, b := range map[string]string{
		"empty":         "",
		"cut short":     string(whole[:len(whole)/2]),
		"last line cut": string(whole[:len(whole)-1]),
		"no end":        strings.Join(lines[:len(lines)-2], ""),
		"entry lost":    strings.Join(append(lines[:5:5], lines[6:]...), ""),
		"bad digest":    strings.Replace(string(whole), lines[4][:20], "sha256-zz", 1),
		"bad size":      strings.Replace(string(whole), lines[4], lines[4][:72]+"-5\n", 1),
		"other format":  "cowfs-trace 2\n" + strings.Join(lines[1:], ""),
		"garbage":       string(randBytes(4096)),
	} {
		os.WriteFile(path, []byte(b), 0o600)
		if got, err := remote.ReadTrace(path); !errors.Is(err, object.ErrCorrupt) {
			n := -1
			if got != nil {
				n = len(got.Entries)
			}
			t.Errorf("%s: %d entries, %v; want ErrCorrupt", name, n, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("the traces directory holds %d files; want the trace alone (no temporary files left)", len(ents))
	}
}
