package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/scan"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/remote"
)

// openSnapshots opens the object store and refs of a state directory.
func openSnapshots(state string) (*object.DirStore, *refs.Dir, error) {
	store, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		return nil, nil, err
	}
	d, err := refs.Open(statedir.RefsDir(state))
	return store, d, err
}

// verifyJSON is the line of cowfs verify --json.
type verifyJSON struct {
	Name     string        `json:"name"`
	Root     string        `json:"root"`
	OK       bool          `json:"ok"`
	Problems []problemJSON `json:"problems"`
}

// problemJSON is one problem verify found: where, and with --repair which
// object, of what kind, and where it was repaired from ("" if not).
type problemJSON struct {
	// Root is, for a bucket, the version or checkpoint the object was
	// found beneath.
	Root         string   `json:"root,omitempty"`
	Paths        []string `json:"paths"`
	Object       string   `json:"object"`
	Kind         string   `json:"kind"`
	Error        string   `json:"error"`
	RepairedFrom string   `json:"repaired_from"`
}

func newVerifyCmd(g *globals) *cobra.Command {
	var repair, asJSON bool
	var version string
	r := &remoteFlags{}
	s3f := &s3Flags{}
	cmd := &cobra.Command{
		Use:   "verify NAME [--repair [--remote ADDR]] | verify [NAME | --version V] --remote s3://BUCKET/PREFIX",
		Short: "Re-hash every object of a snapshot, or of what a bucket keeps",
		Long: `Read every object snapshot NAME reaches (trees, file objects and every
chunk) and check each against its digest. Exits non-zero and lists the bad
paths if anything does not match or is missing. A damaged object is moved
to objects/quarantine/ in the state directory: nothing reads it again.

With --repair, each damaged or missing object is stored again from the
first place that still has bytes hashing to its digest, in order: the lower
directory the snapshot's mount was over, at the same path; the snapshot's
mountpoint, while it is mounted; the lower directories of the snapshots it
was restored from; and with --remote, that master. A chunk is read again at
its offset in the file; a tree by reading all of its directory again. Exits
non-zero and names every object it could not repair, with the paths that
use it.

With --remote s3://BUCKET/PREFIX it reads what the bucket keeps instead:
checkpoint NAME, the published version --version names (its digest, or
the start of one, as cowfs versions shows it), or with neither every
published version and checkpoint. Each object is read once, however many
of them reach it, and a problem is named by the first path that reaches
it. The bucket is not changed: what is damaged is every worker's, and is
uploaded again by a publish or push of what it was made from. While it
reads, verify holds what it reads with leases, as a mount does, so that a
gc with --keep-versions beside it does not remove it.`,
		Example: `  cowfs verify crawl-2026-11-23T10
  cowfs verify crawl-2026-11-23T10 --repair --remote master:7420 --token-file /etc/cowfs/token
  cowfs verify --remote s3://cowfs/spiders/spider1
  cowfs verify --remote s3://cowfs/spiders/spider1 --version 3f9a2c41d0be`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				if args[0] == "" {
					return usageError{refs.ValidName("")}
				}
				name = args[0]
			}
			if strings.HasPrefix(r.addr, "s3://") {
				if repair {
					return usagef("--repair stores again into a local snapshot; a bucket's objects are uploaded again by cowfs publish or cowfs push")
				}
				for _, n := range []string{"token-file", "tls-ca", "io-timeout"} {
					if cmd.Flags().Changed(n) {
						return usagef("--%s applies only with a master's --remote", n)
					}
				}
				return verifyBucket(cmd, s3f, r.addr, name, version, asJSON)
			}
			for _, n := range []string{"version", "s3-endpoint", "s3-ca", "s3-timeout"} {
				if cmd.Flags().Changed(n) {
					return usagef("--%s applies only with --remote s3://BUCKET/PREFIX", n)
				}
			}
			if name == "" {
				return usagef("give the snapshot NAME to verify (or --remote s3://BUCKET/PREFIX)")
			}
			if r.addr != "" && !repair {
				return usagef("--remote of a master applies only with --repair (--remote s3://BUCKET/PREFIX verifies a bucket)")
			}
			for _, n := range []string{"token-file", "tls-ca", "io-timeout"} {
				if r.addr == "" && cmd.Flags().Changed(n) {
					return usagef("--%s applies only with --remote", n)
				}
			}
			store, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			s, err := d.Get(name)
			if err != nil {
				return err
			}
			if repair {
				return verifyRepair(cmd, store, d, s, r, asJSON)
			}
			probs, err := object.Verify(context.Background(), store, s.Root.Object)
			if err != nil {
				return fmt.Errorf("verify %s: %w", s.Name, err)
			}
			res := verifyJSON{Name: s.Name, Root: s.Root.Object.String(), OK: len(probs) == 0, Problems: []problemJSON{}}
			for _, p := range probs {
				fmt.Fprintf(cmd.ErrOrStderr(), "BAD %s: %v\n", p.Path, p.Err)
				res.Problems = append(res.Problems, problemJSON{Paths: []string{rootSlash(p.Path)}, Error: p.Err.Error()})
			}
			if asJSON {
				if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			}
			if len(probs) > 0 {
				return fmt.Errorf("snapshot %s is %w: %d problems (cowfs verify %s --repair stores again what it can)", s.Name, errDamaged, len(probs), s.Name)
			}
			if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s: ok (root %s)\n", s.Name, s.Root.Object)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&asJSON, "json", false, jsonFlagHelp)
	fl.BoolVar(&repair, "repair", false, "store damaged or missing objects again from where the snapshot was taken, or the --remote master")
	fl.StringVar(&r.addr, "remote", "", "with --repair: also fetch what is damaged from the master at ADDR (host:port); s3://BUCKET/PREFIX: verify what the bucket keeps")
	fl.StringVar(&version, "version", "", "with --remote s3://...: verify only this published version (its digest, or the start of one)")
	fl.StringVar(&r.tokenFile, "token-file", "", "with --remote: file holding the master's bearer token")
	fl.StringVar(&r.tlsCA, "tls-ca", "", "with --remote: use TLS, checking the master's certificate against this CA (PEM)")
	fl.DurationVar(&r.ioTimeout, "io-timeout", 20*time.Second, "with --remote: give up on a master that does not answer in this time")
	s3f.register(cmd)
	return cmd
}

// verifyRepair runs verify --repair of snapshot s.
func verifyRepair(cmd *cobra.Command, store *object.DirStore, d *refs.Dir, s refs.Snapshot, r *remoteFlags, asJSON bool) error {
	sources, closeAll, err := repairSources(d, s, r)
	if err != nil {
		return err
	}
	defer closeAll()
	found, err := object.Repair(context.Background(), store, s.Root.Object, sources)
	if err != nil {
		return fmt.Errorf("verify %s: %w", s.Name, err)
	}
	left := 0
	res := verifyJSON{Name: s.Name, Root: s.Root.Object.String(), Problems: []problemJSON{}}
	for _, dm := range found {
		paths := slices.Clone(dm.Paths)
		for i := range paths {
			paths[i] = rootSlash(paths[i])
		}
		p := problemJSON{Paths: paths, Object: dm.Object.String(), Kind: kindName(dm.Kind), RepairedFrom: dm.From}
		if dm.Err != nil {
			p.Error = dm.Err.Error()
		}
		res.Problems = append(res.Problems, p)
		what := fmt.Sprintf("%s (%s, used by %s)", dm.Object, kindName(dm.Kind), strings.Join(paths, ", "))
		if dm.Repaired() {
			if !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "REPAIRED %s from %s\n", what, dm.From)
			}
			continue
		}
		left++
		fmt.Fprintf(cmd.ErrOrStderr(), "NOT REPAIRED %s: %v\n", what, dm.Err)
	}
	res.OK = left == 0
	if asJSON {
		if err := writeJSON(cmd.OutOrStdout(), res); err != nil {
			return err
		}
	}
	if left > 0 {
		return fmt.Errorf("snapshot %s is %w: %d of %d damaged or missing objects not repaired: no source has their bytes (tried: %s)",
			s.Name, errDamaged, left, len(found), sourceNames(sources))
	}
	if !asJSON {
		fmt.Fprintf(cmd.OutOrStdout(), "snapshot %s: ok (root %s), %d objects repaired\n", s.Name, s.Root.Object, len(found))
	}
	return nil
}

// rootSlash names the root tree, whose path is "", as "/".
func rootSlash(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func kindName(k object.Kind) string {
	switch k {
	case object.KindBlob:
		return "chunk"
	case object.KindFile:
		return "file object"
	case object.KindTree:
		return "tree"
	}
	return "object"
}

func sourceNames(sources []object.Source) string {
	if len(sources) == 0 {
		return "none"
	}
	var names []string
	for _, s := range sources {
		names = append(names, s.String())
	}
	return strings.Join(names, ", ")
}

// repairSources returns where verify --repair looks for the bytes of
// snapshot s's damaged objects, in order: the lower directory its mount
// was over; its mountpoint, while mounted; the lowers of the snapshots it
// was restored from (a file unchanged since is at the same path there);
// and the master given with --remote.
func repairSources(d *refs.Dir, s refs.Snapshot, r *remoteFlags) ([]object.Source, func(), error) {
	var sources []object.Source
	var closers []func() error
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	seen := map[string]bool{}
	addDir := func(what, dir string) {
		if dir == "" || seen[dir] {
			return
		}
		seen[dir] = true
		lo, err := lower.OpenDirStrict(dir)
		if err != nil {
			slog.Warn("repair: cannot read a source", "source", what+" "+dir, "err", err)
			return
		}
		closers = append(closers, lo.Close)
		sources = append(sources, dirSource{name: what + " " + dir, lo: lo})
	}
	addDir("lower", s.Lower)
	if ok, _ := fs.IsMountpoint(s.Source); ok {
		addDir("mount", s.Source)
	}
	// A restore's snapshot names the one it was restored from: follow
	// the chain, which a name reused since can make a loop.
	for p, n := s.Parent, 0; p != "" && n < 64; n++ {
		ps, err := d.Get(p)
		if err != nil {
			break
		}
		addDir("lower", ps.Lower)
		p = ps.Parent
	}
	if r.addr != "" {
		if err := r.check(); err != nil {
			closeAll()
			return nil, nil, err
		}
		var token string
		if r.tokenFile != "" {
			b, err := os.ReadFile(r.tokenFile)
			if err != nil {
				closeAll()
				return nil, nil, fmt.Errorf("token: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		client, err := remote.Dial(remote.ClientConfig{
			Addr: r.addr, Token: token, CAFile: r.tlsCA,
			CallTimeout: min(10*time.Second, r.ioTimeout), Timeout: r.ioTimeout,
		})
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		closers = append(closers, client.Close)
		sources = append(sources, &masterSource{c: client})
	}
	return sources, closeAll, nil
}

// dirSource finds an object again in a directory tree the snapshot was
// taken of or over, at the same path: a chunk at the same offset of the
// same file, a file object or tree by reading the file or directory
// again, as a snapshot would.
type dirSource struct {
	name string
	lo   *lower.Dir
}

func (s dirSource) String() string { return s.name }

func (s dirSource) Object(ctx context.Context, d object.Digest, p object.Place) ([]byte, error) {
	st, err := s.lo.Lstat(p.Path)
	if err != nil {
		return nil, err
	}
	if p.Kind != object.KindBlob {
		// Read as a snapshot reads a lower, keeping only the one
		// object wanted.
		one := &oneObject{want: d}
		if _, _, err := scan.Tree(ctx, s.lo, p.Path, one, nil); err != nil {
			return nil, err
		}
		if one.b == nil {
			return nil, fmt.Errorf("%s: %w", p.Path, object.ErrNotFound)
		}
		return one.b, nil
	}
	// Not a FIFO or device: opening one could wait forever.
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: not a regular file", p.Path)
	}
	f, err := s.lo.Open(p.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	off := int64(p.Chunk) * object.ChunkSize
	buf := make([]byte, min(object.ChunkSize, p.Entry.Size-off))
	if _, err := io.ReadFull(io.NewSectionReader(f, off, int64(len(buf))), buf); err != nil {
		return nil, fmt.Errorf("%s: %w", p.Path, err)
	}
	return object.EncodeBlob(buf)
}

// oneObject is a store for a scan that keeps only the object want.
type oneObject struct {
	want object.Digest
	b    []byte
}

func (o *oneObject) Put(_ context.Context, b []byte) (object.Digest, error) {
	d := object.Sum(b)
	if d == o.want {
		o.b = bytes.Clone(b) // the scanner reuses b (object.Putter)
	}
	return d, nil
}

func (o *oneObject) Get(_ context.Context, d object.Digest) ([]byte, error) {
	return nil, fmt.Errorf("%s: %w", d, object.ErrNotFound)
}

// masterSource fetches objects from a master. Once the master was found
// unreachable it is not asked again: each try waits out --io-timeout.
type masterSource struct {
	c    *remote.Client
	mu   sync.Mutex
	down error
}

func (m *masterSource) String() string { return "master " + m.c.Addr() }

func (m *masterSource) Object(ctx context.Context, d object.Digest, _ object.Place) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down != nil {
		return nil, m.down
	}
	b, err := m.c.Get(ctx, d)
	if errors.Is(err, remote.ErrUnavailable) {
		slog.Warn("repair: master unreachable; not asking it again", "err", err)
		m.down = err
	}
	return b, err
}
