package cowfs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
)

// Every default comes from withDefaults, whoever builds the spec: the CLI,
// the mount(8) helper, or a Go program.
func TestSpecDefaults(t *testing.T) {
	s, err := Spec{Mountpoint: "mnt", State: "state", Lower: Lower{Dir: "lower"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	o := s.Options
	if o.Procs != DefaultProcs() || o.ReadAhead != DefaultReadAhead || o.Reserve != DefaultReserve ||
		o.StartTimeout != DefaultStartTimeout || o.Logger == nil {
		t.Errorf("options %+v: want the defaults", o)
	}
	if !filepath.IsAbs(s.Mountpoint) || !filepath.IsAbs(s.State) || !filepath.IsAbs(s.Lower.Dir) {
		t.Errorf("paths %q %q %q: want them absolute", s.Mountpoint, s.State, s.Lower.Dir)
	}
	r, err := Spec{Lower: Lower{Remote: &Remote{Addr: "h:1"}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if r.Lower.Remote.IOTimeout != DefaultIOTimeout || r.Options.StartTimeout != remote.ResolveTimeout+DefaultIOTimeout {
		t.Errorf("remote %+v, start timeout %v: want the defaults", r.Lower.Remote, r.Options.StartTimeout)
	}
	// A negative value is a choice, not a zero to fill in.
	n, _ := Spec{Options: Options{ReadAhead: -1, Reserve: -1, StartTimeout: time.Second}}.withDefaults()
	if n.Options.ReadAhead != -1 || n.Options.Reserve != -1 || n.Options.StartTimeout != time.Second {
		t.Errorf("options %+v: the given values were replaced", n.Options)
	}
}

// A spec Open cannot mount is refused with what is wrong, and leaves
// nothing behind: no state directory, no mount.
func TestOpenRefusesBadSpec(t *testing.T) {
	base := t.TempDir()
	mnt, lower := filepath.Join(base, "mnt"), filepath.Join(base, "lower")
	os.Mkdir(mnt, 0o755)
	os.Mkdir(lower, 0o755)
	state := filepath.Join(base, "state")
	cases := []struct {
		name string
		spec Spec
		want string
	}{
		{"no lower", Spec{Mountpoint: mnt, State: state}, "no lower"},
		{"two lowers", Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower, Remote: &Remote{Addr: "h:1"}}}, "not both"},
		{"missing lower", Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: filepath.Join(base, "none")}}, "lower directory"},
		{"no state", Spec{Mountpoint: mnt, Lower: Lower{Dir: lower}}, "no state directory"},
		{"writeback and passthrough", Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower},
			Options: Options{WritebackCache: true, Passthrough: true}}, "cannot be combined"},
		{"readahead too large", Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}, Options: Options{ReadAhead: 2 << 30}}, "between 4K and 1G"},
		{"address without port", Spec{Mountpoint: mnt, State: state, Lower: Lower{Remote: &Remote{Addr: "h"}}}, "want HOST:PORT"},
		{"path outside", Spec{Mountpoint: mnt, State: state, Lower: Lower{Remote: &Remote{Addr: "h:1", Path: "../x"}}}, "--path"},
		{"bad version", Spec{Mountpoint: mnt, State: state, Lower: Lower{Remote: &Remote{Addr: "h:1", Version: "v1"}}}, "version"},
		{"upper in lower", Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower},
			Upper: filepath.Join(lower, "u"), Work: filepath.Join(base, "w")}, "upper"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ws, err := Open(ctx, c.spec)
			if err == nil {
				ws.Close()
				t.Fatal("opened; want an error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if _, err := os.Stat(state); err == nil {
				t.Error("the refused spec made the state directory")
			}
		})
	}
}

// The mount process gets its spec as JSON (cmd/cowfs spawnDaemon): every
// field but the logger must survive the trip, or an option given to cowfs
// mount would be lost in the background.
func TestSpecJSON(t *testing.T) {
	s := Spec{
		Mountpoint: "/m", State: "/s", Upper: "/u", Work: "/w",
		Lower: Lower{Dir: "/l", Snapshot: "snap", Remote: &Remote{Addr: "h:1", Path: "p", Token: "t", TokenFile: "/tf",
			TLSCA: "/ca", Version: "v", CacheSize: 1, Prefetch: true, IOTimeout: time.Second}},
		Options: Options{WritebackCache: true, Passthrough: true, PassthroughLower: true, Procs: 3,
			ReadAhead: 4096, Reserve: 1 << 24, StartTimeout: time.Minute, Debug: true},
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got Spec
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("after JSON:\n%+v %+v\nwant\n%+v %+v", got, got.Lower.Remote, s, s.Lower.Remote)
	}
}

// A missing FUSE device is named, with the remedy, before anything is
// made.
func TestValidateNoFuseDevice(t *testing.T) {
	defer func(d string) { fuseDevice = d }(fuseDevice)
	fuseDevice = filepath.Join(t.TempDir(), "fuse")
	mnt, lower := t.TempDir(), t.TempDir()
	err := Spec{Mountpoint: mnt, Lower: Lower{Dir: lower}, State: t.TempDir()}.Validate()
	if err == nil || !strings.Contains(err.Error(), fuseDevice) || !strings.Contains(err.Error(), "modprobe fuse") {
		t.Fatalf("validate without a FUSE device: %v", err)
	}
}
