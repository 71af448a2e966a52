package cowfs

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cowfsfs "github.com/cowfs/cowfs/fs"
)

// listTree returns every path under base with its mode, to show that a
// refused mount changed nothing.
func listTree(t *testing.T, base string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, p+" "+info.Mode().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Directories of a mount that are the same or nested are refused before
// anything is created: an upper that is the lower changed the read-only
// lower, and an upper beneath the mountpoint left a work directory there
// that made every later mount fail.
func TestLayoutOverlapsRefused(t *testing.T) {
	t.Parallel()
	// Each case names its directories relative to a fresh base that
	// holds lower/f, an empty mnt, and link -> lower.
	type layout struct{ mnt, lower, upper, work, state string }
	cases := []struct {
		name string
		l    layout
		want string
	}{
		{"upper is the lower", layout{upper: "lower", work: "work"}, "upper"},
		{"upper inside the lower", layout{upper: "lower/u", work: "work"}, "upper"},
		{"work inside the lower", layout{upper: "upper", work: "lower/w"}, "work"},
		{"lower inside the upper", layout{lower: "upper/lower", upper: "upper", work: "work"}, "lower"},
		{"upper is the work", layout{upper: "uw", work: "uw"}, "work"},
		{"work inside the upper", layout{upper: "upper", work: "upper/w"}, "work"},
		{"upper inside the work", layout{upper: "work/u", work: "work"}, "upper"},
		{"upper and work inside the mountpoint", layout{upper: "mnt/u", work: "mnt/w"}, "mountpoint"},
		{"mountpoint inside the upper", layout{mnt: "upper/mnt", upper: "upper", work: "work"}, "mountpoint"},
		{"mountpoint inside the work", layout{mnt: "work/mnt", upper: "upper", work: "work"}, "mountpoint"},
		{"mountpoint inside the lower", layout{mnt: "lower/mnt", upper: "upper", work: "work"}, "inside the lower"},
		{"state is the lower", layout{state: "lower"}, "state"},
		{"state inside the lower", layout{state: "lower/state"}, "state"},
		{"lower inside the state", layout{lower: "state/lower", state: "state"}, "lower"},
		{"state inside the mountpoint", layout{state: "mnt/state"}, "state"},
		{"mountpoint inside the state", layout{mnt: "state/mnt", state: "state"}, "mountpoint"},
		{"upper is the state", layout{upper: "state", work: "work", state: "state"}, "upper"},
		{"state inside the upper", layout{upper: "upper", work: "work", state: "upper/state"}, "state"},
		{"state inside the work", layout{upper: "upper", work: "work", state: "work/state"}, "state"},
		{"upper inside the lower through a symlink", layout{upper: "link/u", work: "work"}, "upper"},
		{"upper is the lower through a symlink", layout{upper: "link", work: "work"}, "upper"},
		{"state inside the lower through a symlink", layout{state: "link/s"}, "state"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			at := func(p, def string) string {
				if p == "" {
					p = def
				}
				if p == "-" {
					return ""
				}
				return filepath.Join(base, p)
			}
			lower, mnt := at(c.l.lower, "lower"), at(c.l.mnt, "mnt")
			for _, d := range []string{lower, mnt} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(lower, "f"), []byte("lower"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("lower", filepath.Join(base, "link")); err != nil {
				t.Fatal(err)
			}
			// A state directory is always given: cowfs puts its
			// own places beside the case's.
			spec := Spec{Mountpoint: mnt, Lower: Lower{Dir: lower}, State: at(c.l.state, "state"),
				Upper: at(c.l.upper, "-"), Work: at(c.l.work, "-")}
			before := listTree(t, base)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ws, err := Open(ctx, spec)
			if err == nil {
				ws.Close()
				t.Fatalf("mounted %+v", c.l)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), base) {
				t.Errorf("error %q does not name the %s and its path", err, c.want)
			}
			if ok, _ := cowfsfs.IsMountpoint(mnt); ok {
				t.Fatal("something was mounted")
			}
			if after := listTree(t, base); !slices.Equal(before, after) {
				t.Errorf("a refused mount changed the filesystem:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// The layouts cowfs makes itself, and an upper and work side by side
// under the state directory, are accepted.
func TestLayoutAllowed(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state, lower, mnt := filepath.Join(base, "state"), filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	for _, d := range []string{lower, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ws := openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower},
		Upper: filepath.Join(state, "u", "upper"), Work: filepath.Join(state, "u", "work")})
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	ws = openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}})
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
}

// A mountpoint beneath the lower is refused: the workspace would hold
// itself, and a snapshot of it, reading the lower while it holds writes,
// waited on its own mount for ever. A mount over the lower itself works.
func TestMountpointInsideLower(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	lower := filepath.Join(base, "spider")
	inside := filepath.Join(lower, "workspace")
	if err := os.MkdirAll(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lower, "quotes.py"), []byte("q"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := func(mnt, n string) Spec {
		return Spec{Mountpoint: mnt, Lower: Lower{Dir: lower}, State: filepath.Join(base, "state"),
			Upper: filepath.Join(base, n, "upper"), Work: filepath.Join(base, n, "work")}
	}
	for _, n := range []string{"a", "b"} {
		for _, d := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(base, n, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ws, err := Open(ctx, st(inside, "a")); err == nil {
		ws.Close()
		t.Fatal("mounted beneath its own lower")
	} else if !strings.Contains(err.Error(), "inside the lower") {
		t.Errorf("mount beneath the lower: %v", err)
	}
	if ok, _ := cowfsfs.IsMountpoint(inside); ok {
		t.Fatal("something was mounted")
	}
	// Over the lower itself.
	if err := os.Remove(inside); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lower, "quotes.py")); err != nil {
		t.Fatal(err)
	}
	// An empty lower, so that the mountpoint is empty too.
	openT(t, st(lower, "b"))
	if err := os.WriteFile(filepath.Join(lower, "items.jl"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(lower)
	if err != nil || len(ents) != 1 {
		t.Fatalf("mount over its lower: %v, %v", ents, err)
	}
}
