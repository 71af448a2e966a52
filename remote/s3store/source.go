package s3store

import (
	"context"
	"fmt"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// Source is a bucket as the source of a remote lower (cowfs mount
// --remote s3://BUCKET/PREFIX): its newest published version, and its
// objects for the machine's cache (Fetcher). A master resolves any
// subtree of its export to a version of its own; a bucket holds versions
// of the whole published tree only, and a mount of a subtree descends
// into one.
type Source struct {
	Fetcher
}

// Resolve returns the newest published version; path must be "" (a
// bucket has no version of a subtree).
func (s Source) Resolve(ctx context.Context, path string) (object.Digest, error) {
	if path != "" {
		return object.Zero, fmt.Errorf("%s holds versions of the whole published tree, not of %q", s.S.URL(), path)
	}
	v, err := s.S.Newest(ctx)
	if err != nil {
		return object.Zero, err
	}
	return v.Digest, nil
}

// Retries counts the requests the SDK made again.
func (s Source) Retries() int64 { return s.S.retries.Load() }

// Timeout bounds one request with its retries (Config.Timeout): the
// cache bounds a read without a deadline by it.
func (s Source) Timeout() time.Duration { return s.S.cfg.Timeout }

// Close has nothing to release: the SDK's connections are idle ones.
func (s Source) Close() error { return nil }
