package statedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A mountpoint has one key however it is spelled, and two mountpoints of
// one base name have two.
func TestKey(t *testing.T) {
	base := t.TempDir()
	a, b := filepath.Join(base, "a", "ws"), filepath.Join(base, "b", "ws")
	for _, d := range []string{a, b} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(filepath.Join(base, "a"), link); err != nil {
		t.Fatal(err)
	}
	if Key(a) != Key(filepath.Join(link, "ws")) || Key(a) != Key(filepath.Join(a, ".", "")) {
		t.Errorf("one mountpoint, keys %s, %s, %s", Key(a), Key(filepath.Join(link, "ws")), Key(filepath.Join(a, ".")))
	}
	if Key(a) == Key(b) || !strings.HasPrefix(Key(a), "ws-") {
		t.Errorf("keys %s and %s: want two, named after the base name", Key(a), Key(b))
	}
	if u, w := MountDirs("/s", a); filepath.Dir(u) != filepath.Dir(w) || !strings.HasPrefix(u, "/s/mounts/") {
		t.Errorf("mount dirs %s %s", u, w)
	}
}
