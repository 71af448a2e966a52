package remote_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// conformanceMaster starts a master on loopback with an empty export and
// returns a client of it, and a Seed that stores objects in the master's
// store, where the master serves them from.
func conformanceMaster(t *testing.T) (*remote.Client, func(*testing.T, []byte) object.Digest) {
	t.Helper()
	m := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	client, err := remote.Dial(remote.ClientConfig{Addr: m.Addr, CallTimeout: 10 * time.Second, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	store, err := object.OpenDirStore(m.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	seed := func(t *testing.T, enc []byte) object.Digest {
		d, err := store.Put(context.Background(), enc)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return client, seed
}

// A worker's cache passes the suite every object store runs: over a real
// master, with what it caches damaged on the worker's disk.
func TestCacheConformance(t *testing.T) {
	objecttest.Run(t, func(t *testing.T) objecttest.Subject {
		client, seed := conformanceMaster(t)
		dir := t.TempDir()
		store, err := object.OpenDirStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		cache, err := remote.NewCache(store, client, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cache.Close)
		return objecttest.Subject{Store: cache, Seed: seed,
			Damage: func(t *testing.T, d object.Digest) { objecttest.DamageFile(t, dir, d) }}
	})
}

// oneHas asks a client's batch Has about one object: the client asks many
// at once by design (a push asks about every object of a snapshot).
type oneHas struct{ *remote.Client }

func (c oneHas) Has(ctx context.Context, d object.Digest) (bool, error) {
	has, err := c.Client.Has(ctx, []object.Digest{d})
	if err != nil {
		return false, err
	}
	return has[0], nil
}

// The gRPC client passes the suite, but for the damage tests: its Get is
// unverified by design, the cache over it verifies.
func TestClientConformance(t *testing.T) {
	objecttest.Run(t, func(t *testing.T) objecttest.Subject {
		client, seed := conformanceMaster(t)
		return objecttest.Subject{Store: oneHas{client}, Seed: seed, Unverified: true}
	})
}
