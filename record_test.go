package cowfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeFileAtomic syncs the directory after the rename: what a crash
// keeps of the directory then has the new file under its name.
func TestWriteFileAtomicSyncsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "remote.json")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	orig := syncDir
	t.Cleanup(func() { syncDir = orig })
	var synced []string
	syncDir = func(d string) error {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != "new\n" {
			t.Errorf("directory synced before the rename: %s holds %q (%v)", path, b, err)
		}
		if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("directory synced with the temporary file still there (%v)", err)
		}
		synced = append(synced, d)
		return orig(d)
	}
	if err := writeFileAtomic(path, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 1 || synced[0] != dir {
		t.Fatalf("directories synced: %q, want [%q]", synced, dir)
	}

	// A directory that cannot be synced is the write's error: the record
	// is not durable, and the mount must not go on as if it were.
	syncDir = func(string) error { return errors.New("no sync") }
	if err := writeFileAtomic(path, []byte("newer\n")); err == nil {
		t.Fatal("writeFileAtomic succeeded with the directory unsynced")
	}
}
