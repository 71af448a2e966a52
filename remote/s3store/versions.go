package s3store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
)

// A published version is one key, versions/<newest-first>-<hex>, written
// last and once: <newest-first> is 19 digits of MaxInt64 minus the
// publish time in ns, so that the store's ascending listing gives the
// newest first and one short list request finds it. The key names the
// version object (remote's: a tree with one entry, root); its body is a
// VersionInfo, for people. Nothing is ever overwritten, so two
// publishers racing each add a whole version; the later key wins.
const versionsDir = "versions/"

// VersionInfo is the body of a version's key.
type VersionInfo struct {
	Version   string    `json:"version"`
	Published time.Time `json:"published"`
	Files     int64     `json:"files"`
	Bytes     int64     `json:"bytes"`
	Source    string    `json:"source,omitempty"`
	// Again is when the version was first published, in the key of a
	// rollback to it (Republish): the version is published again.
	Again time.Time `json:"again,omitzero"`
}

// Version is one published version.
type Version struct {
	Digest    object.Digest
	Published time.Time
}

func versionName(v object.Digest, at time.Time) string {
	return fmt.Sprintf("%019d-%s", math.MaxInt64-at.UnixNano(), strings.TrimPrefix(v.String(), "sha256-"))
}

func parseVersionName(name string) (Version, bool) {
	ts, hex, ok := strings.Cut(name, "-")
	if !ok || len(ts) != 19 {
		return Version{}, false
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Version{}, false
	}
	d, err := object.ParseDigest("sha256-" + hex)
	if err != nil {
		return Version{}, false
	}
	return Version{Digest: d, Published: time.Unix(0, math.MaxInt64-n).UTC()}, true
}

// ErrNoVersion: nothing was published under the prefix.
var ErrNoVersion = errors.New("no version published")

// PutVersion makes version v visible, published at info.Published: the
// one write that publishes, made after every object v reaches is in the
// bucket. The write is conditional; where the store honours that, a key
// is never overwritten, and where it does not, the key is new anyway (it
// holds the time in ns and the digest).
func (s *Store) PutVersion(ctx context.Context, v object.Digest, info VersionInfo) error {
	info.Version = v.String()
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := s.putOnce(ctx, s.key(versionsDir+versionName(v, info.Published)), b); err != nil {
		if errors.Is(err, errExists) {
			return fmt.Errorf("version %s at %s: published already", v.Short(), info.Published)
		}
		return fmt.Errorf("publish version %s: %w", v.Short(), err)
	}
	return nil
}

// Newest returns the newest published version, with one list request.
func (s *Store) Newest(ctx context.Context) (Version, error) {
	var newest Version
	found := false
	err := s.listKeys(ctx, versionsDir, 10, func(name string) bool {
		newest, found = parseVersionName(name)
		return !found
	})
	if err != nil {
		return Version{}, err
	}
	if !found {
		return Version{}, fmt.Errorf("%w under %s: publish one first (cowfs publish DIR %s)", ErrNoVersion, s.URL(), s.URL())
	}
	return newest, nil
}

// Versions returns every published version, newest first.
func (s *Store) Versions(ctx context.Context) ([]Version, error) {
	var vs []Version
	err := s.listKeys(ctx, versionsDir, 0, func(name string) bool {
		if v, ok := parseVersionName(name); ok {
			vs = append(vs, v)
		}
		return true
	})
	return vs, err
}

// Published is a published version as its key describes it, with the
// leases that hold it.
type Published struct {
	VersionInfo
	Digest object.Digest
	// Leases counts the running mounts that hold the version
	// (decision 0078): leases put within LeaseTTL.
	Leases int
}

// Published returns every published version, newest first, each with
// the body of its key and its leases: a GET a version, a few at a time.
func (s *Store) Published(ctx context.Context) ([]Published, error) {
	keys, err := s.versionKeys(ctx)
	if err != nil {
		return nil, err
	}
	leased, err := s.leased(ctx, time.Now())
	if err != nil {
		return nil, err
	}
	out := make([]Published, len(keys))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, k := range keys {
		out[i] = Published{Digest: k.Digest, Leases: leased[k.Digest]}
		g.Go(func() error {
			b, err := s.getKey(gctx, s.key(versionsDir+k.name))
			if errors.Is(err, object.ErrNotFound) {
				return nil // removed since the listing (a gc)
			}
			if err != nil {
				return fmt.Errorf("version %s: %w", k.Digest.Short(), err)
			}
			if err := json.Unmarshal(b, &out[i].VersionInfo); err != nil {
				return fmt.Errorf("version %s: %s: %w", k.Digest.Short(), versionsDir+k.name, err)
			}
			// The key's name is what orders and names it.
			out[i].Version, out[i].Published = k.Digest.String(), k.Published
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(p Published) bool { return p.Version == "" }), nil
}

// Republish makes version v, which is published, the newest again: the
// key of a rollback (cowfs versions rollback), one write, as a publish's
// last, with every object v reaches in the bucket already. Fresh mounts
// get v; running mounts keep the version they mounted. It takes a
// writer's lock and waits out a running gc, as a publish does, then
// finds v's newest key: one a gc with --keep-versions removed is gone,
// and with it, maybe, what only v reached, so v is republished only
// while a key of it stays. The new key's info is that key's, with Again
// its first publish.
func (s *Store) Republish(ctx context.Context, v object.Digest) (VersionInfo, error) {
	unlock, err := s.lockForWrite(ctx)
	if err != nil {
		return VersionInfo{}, err
	}
	defer unlock()
	keys, err := s.versionKeys(ctx)
	if err != nil {
		return VersionInfo{}, err
	}
	var info VersionInfo
	found := false
	for _, k := range keys {
		if k.Digest != v {
			continue
		}
		b, err := s.getKey(ctx, s.key(versionsDir+k.name))
		if errors.Is(err, object.ErrNotFound) {
			continue
		}
		if err != nil {
			return VersionInfo{}, fmt.Errorf("version %s: %w", v.Short(), err)
		}
		if err := json.Unmarshal(b, &info); err != nil {
			return VersionInfo{}, fmt.Errorf("version %s: %s: %v: %w", v.Short(), versionsDir+k.name, err, object.ErrCorrupt)
		}
		if info.Again.IsZero() {
			info.Again = k.Published
		}
		found = true
		break
	}
	if !found {
		return VersionInfo{}, fmt.Errorf("%s: %w as %s", s.URL(), ErrNoVersion, v.Short())
	}
	info.Published = time.Now().UTC()
	if err := s.PutVersion(ctx, v, info); err != nil {
		return VersionInfo{}, err
	}
	info.Version = v.String()
	return info, nil
}
