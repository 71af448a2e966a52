package refs

import (
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// A snapshot name is one line of valid UTF-8: a newline broke the table
// of cowfs snapshots, and a name not valid UTF-8 came back as U+FFFD, so
// the name given found no snapshot.
func TestValidNameText(t *testing.T) {
	for _, name := range []string{"crawl-2026-11-23T10", "ünïcode", "with space", "日本"} {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q): %v", name, err)
		}
	}
	for name, want := range map[string]string{
		"a\nb":      "control character",
		"tab\there": "control character",
		"del\x7f":   "control character",
		"c1\u0085":  "control character",
		"bad\xff":   "UTF-8",
		"\xc3":      "UTF-8",
	} {
		err := ValidName(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidName(%q): %v, want an error saying %q", name, err, want)
		}
	}
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(Snapshot{Name: "a\nb", Root: object.Entry{Object: object.Sum([]byte("x"))}, Created: time.Now()}); err == nil {
		t.Error("created a snapshot whose name holds a newline")
	}
}
