package main

import (
	"errors"
	"fmt"
)

// Exit codes; docs/cli.md lists them for scripts.
const (
	exitOK      = 0
	exitFailure = 1 // anything not named below
	exitUsage   = 2 // bad flags or arguments: nothing was done
)

// usageError is a bad flag or argument: the command did nothing.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError, formatted as fmt.Errorf does.
func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// exitCode is the exit code for err, returned by a command.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	}
	return exitFailure
}
