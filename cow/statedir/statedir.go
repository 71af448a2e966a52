// Package statedir lays out cowfs's state directory. It knows paths only:
// no FUSE, no wire, no engine, so the CLI, the workspace package and the
// mount all find a mountpoint's upper, socket and pins in the same place.
//
// The state directory holds:
//
//	objects/          content-addressed objects (snapshots), shared
//	refs/             one file per snapshot name, and pins
//	mounts/<key>/     upper and work of a mount of a mountpoint
//	restores/<key>/   upper and work of a restore at a mountpoint
//	run/<key>.sock    control socket of the mount at a mountpoint
//
// where <key> is the mountpoint's base name and a hash of its absolute path.
package statedir

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"

	"github.com/cowfs/cowfs/cow/refs"
)

// Key names mountpoint in the state directory.
func Key(mountpoint string) string {
	abs, _ := filepath.Abs(mountpoint)
	// One mountpoint, however it is spelled: through a symlink it must
	// find the same upper and control socket.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Base(abs) + "-" + hex.EncodeToString(sum[:4])
}

// MountDirs returns the upper and work directories a mount of mountpoint
// uses under state.
func MountDirs(state, mountpoint string) (upper, work string) {
	base := filepath.Join(state, "mounts", Key(mountpoint))
	return filepath.Join(base, "upper"), filepath.Join(base, "work")
}

// RestoreDirs returns the upper and work directories a restore at
// mountpoint uses under state; every restore starts them afresh.
func RestoreDirs(state, mountpoint string) (upper, work string) {
	base := filepath.Join(state, "restores", Key(mountpoint))
	return filepath.Join(base, "upper"), filepath.Join(base, "work")
}

// MountpointRecord is the file beside a workspace's upper (in
// mounts/<key>/ or restores/<key>/) that holds the mountpoint it was
// mounted at, which its key, a hash, does not tell.
const MountpointRecord = "mountpoint"

// ControlSocket returns the control socket of the mount at mountpoint.
func ControlSocket(state, mountpoint string) string {
	return filepath.Join(state, "run", Key(mountpoint)+".sock")
}

// ObjectsDir and RefsDir return where snapshots live under state.
func ObjectsDir(state string) string { return filepath.Join(state, "objects") }
func RefsDir(state string) string    { return filepath.Join(state, "refs") }

// TracesDir returns where a worker keeps what its remote mounts read, one
// trace per export (remote.Trace, decision 0064).
func TracesDir(state string) string { return filepath.Join(state, "traces") }

// BucketIndexesDir returns where a worker keeps the pack indexes of the
// buckets its mounts read (s3store.Config.IndexCache, decision 0081).
func BucketIndexesDir(state string) string { return filepath.Join(state, "bucket-indexes") }

// RemotePinKey is the key of the pin a mount at mountpoint holds on the
// remote version beneath it; RestorePinKey that of a restore's snapshot.
func RemotePinKey(mountpoint string) string { return refs.RemotePinPrefix + Key(mountpoint) }
func RestorePinKey(mountpoint string) string {
	return "restore-" + Key(mountpoint)
}
