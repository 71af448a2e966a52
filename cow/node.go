package cow

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Node is one inode of the merged view. Package fs keeps one per kernel
// inode; the fields that describe where the node lives change only under the
// FS namespace lock.
type Node struct {
	// Type is the file type (S_IFMT bits); it never changes.
	Type uint32
	// Ino and Gen identify the node to the kernel: Ino is the lower
	// inode's number for everything that came from the lower, so it stays
	// the same across copy-up; Gen tells reused upper inode numbers apart.
	Ino, Gen uint64

	// lower is, for a directory, the lower directory merged beneath it,
	// and for anything else the lower entry it came from ("" and
	// !hasLower when there is none).
	lower    string
	hasLower bool
	// upper reports whether the node exists in the upper layer.
	upper bool
	// id keys the node's records in metaStore (0: none yet).
	id uint64

	// mu guards data.
	mu   sync.Mutex
	data *fileData
	// list is a directory's kept listing (dirlist.go).
	list atomic.Pointer[dirList]
}

// Upper reports whether the node exists in the upper layer.
func (n *Node) Upper() bool { return n.upper }

// Path is a node's position in the merged tree, as the caller's inode tree
// knows it: Nodes[0] is the root, and Nodes[i+1] is the entry Names[i] of
// Nodes[i].
type Path struct {
	Nodes []*Node
	Names []string
	// detached marks the path of a node that has no name any more (it was
	// unlinked while open). Nodes then holds only the node itself, and
	// only operations that can go through its open descriptors work.
	detached bool
}

// errDetached is returned for a name-based operation on a detached node.
var errDetached = fmt.Errorf("node has no name: %w", syscall.ENOENT)

// DetachedPath returns the path of a node that has no name.
func DetachedPath(n *Node) Path { return Path{Nodes: []*Node{n}, detached: true} }

// node returns the last node of the path.
func (p Path) node() *Node { return p.Nodes[len(p.Nodes)-1] }

// Rel returns the path relative to the root: "" for the root itself.
func (p Path) Rel() string { return strings.Join(p.Names, "/") }

// parent returns the path of the parent directory. p must not be the root.
func (p Path) parent() Path {
	return Path{Nodes: p.Nodes[:len(p.Nodes)-1], Names: p.Names[:len(p.Names)-1]}
}

// name returns the last name of the path ("" for the root).
func (p Path) name() string {
	if len(p.Names) == 0 {
		return ""
	}
	return p.Names[len(p.Names)-1]
}

// child returns the path of child name, node n, of directory p.
func (p Path) child(name string, n *Node) Path {
	return Path{
		Nodes: append(p.Nodes[:len(p.Nodes):len(p.Nodes)], n),
		Names: append(p.Names[:len(p.Names):len(p.Names)], name),
	}
}
