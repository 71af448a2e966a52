package cow

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// Where an upper inode's identity lives.
//
// In its identity xattr, wherever the kernel takes one: always under
// trusted.*, and under user.* on regular files and directories. The
// kernel keeps user.* off symlinks and special files (EPERM, for root
// too), so in an upper whose own attributes are user.* their identity is
// a record of the metadata store instead, keyed by the upper inode's
// number and checked against its birth time. Like the xattr, the record
// goes with the inode, not with a name: a rename or a link in the upper
// changes nothing in it, and it is dropped with the inode's last name
// (docs/decisions/0055-identity-beside-the-inode.md).

// xattrHolds reports whether an upper inode of type typ (S_IFMT bits)
// carries its identity in the identity xattr.
func (u *upperLayer) xattrHolds(typ uint32) bool {
	return u.prefix != userPrefix || typ == unix.S_IFREG || typ == unix.S_IFDIR
}

// identityAt reads the identity of the upper entry dirfd/name, of type
// typ and upper inode number ino; gen is its birth time (statx's
// generation), or 0 to have it read if needed. An inode without one has
// the zero identity.
func (f *FS) identityAt(dirfd int, name string, typ uint32, ino, gen uint64) (identity, error) {
	if f.up.xattrHolds(typ) {
		return f.up.identityAt(dirfd, name)
	}
	born, id, ok, err := f.meta.inodeIdentity(ino)
	if err != nil || !ok {
		return identity{}, err
	}
	if gen == 0 {
		if _, gen, err = statx(dirfd, name); err != nil {
			return identity{}, err
		}
	}
	if gen != born {
		// The record of an inode that is gone, whose number was
		// given again (a crash between its removal and the drop).
		return identity{}, nil
	}
	return id, nil
}

// setIdentity gives the upper inode dirfd/name, of type typ, identity id.
// It returns the upper inode number when the identity went to a record
// (see xattrHolds), 0 when to the xattr.
func (f *FS) setIdentity(dirfd int, name string, typ uint32, id identity) (uint64, error) {
	if f.up.xattrHolds(typ) {
		return 0, f.up.setIdentityAt(dirfd, name, id)
	}
	st, gen, err := statx(dirfd, name)
	if err != nil {
		return 0, err
	}
	if err := f.meta.putInodeIdentity(st.Ino, gen, id); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// recordedLastName returns the upper inode number of dirfd/name, node n,
// if its identity is a record and this is its last name: once the name
// goes, dropIdentity drops the record. 0 otherwise; the entries made in
// the mount have no identity and cost no stat here.
func (f *FS) recordedLastName(dirfd int, name string, n *Node) uint64 {
	if n == nil || n.id == 0 || f.up.xattrHolds(n.Type) {
		return 0
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Nlink != 1 {
		return 0
	}
	return st.Ino
}

// dropIdentity removes the identity record of upper inode ino, whose
// last name is gone. A failure leaves a record that no inode born later
// is taken for: logged, not returned, as the name is gone either way.
func (f *FS) dropIdentity(ino uint64) {
	if ino == 0 {
		return
	}
	if err := f.meta.dropInodeIdentity(ino); err != nil {
		f.log.Warn("drop the identity of a removed upper inode", "ino", ino, "err", err)
	}
}

// inodeIdentity returns the identity record of upper inode ino and the
// birth time it was made for.
func (m *metaStore) inodeIdentity(ino uint64) (gen uint64, id identity, ok bool, err error) {
	v, err := m.get(key('i', ino, ""))
	if errors.Is(err, errNotFound) {
		return 0, identity{}, false, nil
	}
	if err == nil && len(v) != 8+16 {
		err = ErrCorrupt
	}
	if err == nil {
		id, err = decodeIdentity(v[8:])
	}
	if err != nil {
		return 0, identity{}, false, fmt.Errorf("identity of upper inode %d: %w", ino, err)
	}
	return binary.BigEndian.Uint64(v), id, true, nil
}

// putInodeIdentity records the identity of upper inode ino, born at gen.
func (m *metaStore) putInodeIdentity(ino, gen uint64, id identity) error {
	v := append(binary.BigEndian.AppendUint64(nil, gen), id.encode()...)
	return m.update(9+len(v), func(txn *badger.Txn) error {
		return txn.Set(key('i', ino, ""), v)
	})
}

// dropInodeIdentity removes the identity record of upper inode ino.
func (m *metaStore) dropInodeIdentity(ino uint64) error {
	return m.update(9, func(txn *badger.Txn) error {
		return txn.Delete(key('i', ino, ""))
	})
}
