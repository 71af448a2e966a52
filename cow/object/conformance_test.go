package object_test

import (
	"testing"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/object/objecttest"
)

// A machine's store passes the suite every object store runs.
func TestDirStoreConformance(t *testing.T) {
	objecttest.Run(t, func(t *testing.T) objecttest.Subject {
		dir := t.TempDir()
		s, err := object.OpenDirStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		return objecttest.Subject{Store: s, Damage: func(t *testing.T, d object.Digest) { objecttest.DamageFile(t, dir, d) }}
	})
}
