package cowfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// layout is the set of directories a workspace uses; an empty field is
// not used (Lower for a snapshot or remote layer; Upper and Work when they
// default to State's).
type layout struct {
	Mountpoint, Lower, Upper, Work, State string
}

// checkLayout refuses directories of a workspace that are the same or lie
// one inside another, after symlinks are resolved:
//
//   - the lower against everything: an upper, work or state directory in
//     the lower changes the read-only lower (an upper that is the lower
//     took the workspace's writes), and one holding the lower would show
//     the mount's own files in it;
//   - the mountpoint against everything: beneath the mount a directory is
//     hidden by it (an upper beneath the mountpoint left a work directory
//     there that made every later mount fail), and a mountpoint beneath a
//     layer makes the workspace hold itself (cowfs looks lower paths up
//     through the lower's descriptor, the walk crosses into the mount, and
//     a snapshot, which reads the lower while it holds writes, waited on
//     its own mount for ever);
//   - the upper and the work against each other: the work directory's
//     files would show in the workspace;
//   - the state directory against the upper and the work, except that the
//     upper and the work may lie inside the state directory, where cowfs
//     puts them by default.
//
// A mount over the lower itself is allowed: the lower's descriptor is
// opened before the mount and is the directory beneath it.
// It only reads, so a refused mount has changed nothing.
func checkLayout(l layout) error {
	type dir struct{ name, path, real string }
	var dirs []dir
	for _, d := range []dir{
		{name: "mountpoint", path: l.Mountpoint},
		{name: "lower", path: l.Lower},
		{name: "upper", path: l.Upper},
		{name: "work", path: l.Work},
		{name: "state", path: l.State},
	} {
		if d.path == "" {
			continue
		}
		real, err := resolvePath(d.path)
		if err != nil {
			return fmt.Errorf("%s %s: %w", d.name, d.path, err)
		}
		d.real = real
		dirs = append(dirs, d)
	}
	for i, a := range dirs {
		for _, b := range dirs[i+1:] {
			if err := checkPair(a.name, a.path, a.real, b.name, b.path, b.real); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkPair applies checkLayout's rules to two directories, a coming
// before b in the order mountpoint, lower, upper, work, state.
func checkPair(an, ap, ar, bn, bp, br string) error {
	aInB, bInA := isWithin(ar, br), isWithin(br, ar)
	switch {
	case !aInB && !bInA:
		return nil
	case an == "mountpoint" && bn == "lower" && ar == br:
		return nil
	case an == "mountpoint" && bn == "lower" && aInB:
		return fmt.Errorf("mountpoint %s is inside the lower %s: the workspace would contain itself; mount it outside the lower, or over the lower itself", ap, bp)
	case bn == "state" && (an == "upper" || an == "work") && aInB && ar != br:
		return nil
	case ar == br:
		return fmt.Errorf("the %s %s and the %s %s are the same directory; give them separate directories", an, ap, bn, bp)
	case aInB:
		return fmt.Errorf("the %s %s is inside the %s %s; give them separate directories", an, ap, bn, bp)
	default:
		return fmt.Errorf("the %s %s is inside the %s %s; give them separate directories", bn, bp, an, ap)
	}
}

// isWithin reports whether p is dir or lies beneath it; both are clean and
// absolute.
func isWithin(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// resolvePath makes p absolute and resolves its symlinks. The part of p
// that does not exist yet (an upper a mount will create) is kept as
// given beneath its nearest existing parent, resolved.
func resolvePath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	var rest []string
	for d := abs; ; d = filepath.Dir(d) {
		real, err := filepath.EvalSymlinks(d)
		if err == nil {
			return filepath.Join(append([]string{real}, rest...)...), nil
		}
		if !os.IsNotExist(err) || d == "/" {
			return "", err
		}
		rest = append([]string{filepath.Base(d)}, rest...)
	}
}
