package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
)

// Exit codes; docs/cli.md lists them for scripts.
const (
	exitOK          = 0
	exitFailure     = 1 // anything not named below
	exitUsage       = 2 // bad flags or arguments: nothing was done
	exitNotFound    = 3 // no such snapshot, no mount at that path, no bucket or version
	exitUnreachable = 4 // the master or the object store did not answer in time
	exitCorrupt     = 5 // damaged objects: verify found some, or a read met one
	exitDenied      = 6 // the master refused the token, the object store the credentials, or TLS failed
)

// usageError is a bad flag or argument: the command did nothing.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError, formatted as fmt.Errorf does.
func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// errNotMounted reports a path where no mount is.
var errNotMounted = errors.New("not mounted")

// errDamaged reports a snapshot verify found damage in.
var errDamaged = errors.New("damaged")

// exitCode is the exit code for err, returned by a command: by the
// sentinel errors it wraps, checked in this order.
func exitCode(err error) int {
	var u usageError
	var x exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &x):
		return x.code
	case errors.Is(err, errDamaged), errors.Is(err, object.ErrCorrupt), errors.Is(err, cow.ErrCorrupt), errors.Is(err, remote.ErrMasterDamaged):
		return exitCorrupt
	case errors.Is(err, remote.ErrUnauthenticated), errors.Is(err, remote.ErrTLS),
		errors.Is(err, s3store.ErrCredentials), errors.Is(err, s3store.ErrTLS):
		return exitDenied
	case errors.Is(err, remote.ErrUnavailable), errors.Is(err, s3store.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, refs.ErrNotFound), errors.Is(err, cowfs.ErrNoWorkspace), errors.Is(err, errNotMounted), errors.Is(err, errNoCowfsMount),
		errors.Is(err, s3store.ErrNoBucket), errors.Is(err, s3store.ErrNoVersion):
		return exitNotFound
	}
	return exitFailure
}

// mountSentinels are the sentinel errors exitCode knows that a mount
// process may meet while serving a request of its control socket.
var mountSentinels = []error{
	remote.ErrUnavailable, remote.ErrUnauthenticated, remote.ErrTLS, remote.ErrMasterDamaged,
	s3store.ErrUnreachable, s3store.ErrCredentials, s3store.ErrTLS, s3store.ErrNoBucket,
	object.ErrCorrupt, cow.ErrCorrupt, refs.ErrNotFound,
}

// fromMount returns err, which control.Call returned, wrapping the
// sentinels whose text it holds: over the control socket only an
// error's text crosses, and the mount wrapped the sentinel (with %w) into
// it. An error of the socket itself (cowfs.ErrNoWorkspace) is returned as
// it is.
func fromMount(err error) error {
	if err == nil || errors.Is(err, cowfs.ErrNoWorkspace) {
		return err
	}
	for _, s := range mountSentinels {
		if strings.Contains(err.Error(), s.Error()) {
			return mountError{err: err, sentinel: s}
		}
	}
	return err
}

// mountError is an error a mount replied, with the sentinel its text
// names.
type mountError struct{ err, sentinel error }

func (e mountError) Error() string   { return e.err.Error() }
func (e mountError) Unwrap() []error { return []error{e.err, e.sentinel} }

// exitError is an error that reached this process as text, with the exit
// code it had where it happened: a mount process's failure, which it
// reports to cowfs mount on the ready pipe (daemon.go).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// failureLine is how a mount process reports err on the ready pipe: its
// exit code, a space, the message on one line.
func failureLine(err error) string {
	return strconv.Itoa(exitCode(err)) + " " + strings.ReplaceAll(err.Error(), "\n", " ")
}

// parseFailure reads a failureLine back. A line without a code (a mount
// process of another cowfs) is a failure with exit code 1.
func parseFailure(line string) error {
	c, msg, ok := strings.Cut(line, " ")
	code, err := strconv.Atoi(c)
	if !ok || err != nil || code <= 0 || code > 125 {
		return exitError{code: exitFailure, msg: line}
	}
	return exitError{code: code, msg: msg}
}
