// Package prestart starts the mount process of a background `cowfs mount`
// or `cowfs restore` while the command itself is still starting.
//
// The command hands a mount to a process of its own (a Go process cannot
// fork without exec), and each start of the binary, the runtime's and its
// packages' initialization, is a good part of a mount's time. Started
// when the command's packages begin to initialize, the mount process
// initializes beside the command instead of after it. It waits, doing
// nothing, for the spec the command sends once it has parsed and checked
// its command line; a command that ends without sending one (bad input,
// a usage error) closes the pipe, and the process exits having done
// nothing. A command that serves in the foreground would hold the pipe
// open for as long as it serves, so Background says no wherever the
// command serves in the foreground (--foreground, PID 1), as
// chooseForeground in cmd/cowfs decides.
//
// This package imports os and syscall only, so that Go initializes it
// among the first packages. Go initializes packages in the order of their
// import paths, each once its imports are: an import such as strings or
// path/filepath, whose paths sort after those of the modules cowfs links,
// would wait for most of them, and the mount process would start only
// once most of the command's own initialization was done.
package prestart

import (
	"os"
	"syscall"
)

// The mount process reports on a pipe passed as fd 3 that the mount
// serves, or why it could not; it reads its spec from a second pipe,
// fd 4. These variables name them.
const (
	ReadyEnv = "COWFS_READY_FD"
	SpecEnv  = "COWFS_SPEC_FD"
)

// A Proc is a mount process started before the command knew its spec.
type Proc struct {
	P *os.Process
	// Ready is the read end of the pipe the process reports on.
	Ready *os.File
	// Spec is the write end of the pipe it reads its spec from.
	Spec *os.File
}

var started *Proc

func init() {
	if os.Getenv(ReadyEnv) != "" || os.Getpid() == 1 || !Background(os.Args) {
		return
	}
	// Where the start fails, the command starts the process itself,
	// later.
	started, _ = Start(append(os.Args[1:len(os.Args):len(os.Args)], "--foreground"))
}

// Take returns the mount process started at init, once: nil if none was
// started (or it could not be), and the command starts one itself.
func Take() *Proc {
	p := started
	started = nil
	return p
}

// Background says whether args (os.Args) are a cowfs mount or restore
// that the command will hand to a mount process of its own: the
// subcommand after any --state, no --foreground, no help or version
// asked for. It may say yes to a command line the command then refuses
// (the process started for it exits unused), never no to one it hands
// over, except what it cannot tell without the command's own parsing
// (an abbreviation, an unknown flag before the subcommand): those start
// their mount process the usual way, later.
func Background(args []string) bool {
	if len(args) < 2 || hasPrefix(base(args[0]), "mount.fuse.cowfs") {
		return false
	}
	rest := args[1:]
	for len(rest) > 0 && hasPrefix(rest[0], "-") {
		switch {
		case rest[0] == "--state" && len(rest) > 1:
			rest = rest[2:]
		case hasPrefix(rest[0], "--state="):
			rest = rest[1:]
		default:
			return false
		}
	}
	if len(rest) == 0 || (rest[0] != "mount" && rest[0] != "restore") {
		return false
	}
	for _, a := range rest[1:] {
		switch {
		case a == "--":
			return false
		case a == "-h" || a == "--help" || a == "--version" || a == "--foreground":
			return false
		case hasPrefix(a, "--foreground="):
			// The values strconv.ParseBool (pflag's) takes for false;
			// any other value serves in the foreground or is refused.
			switch a[len("--foreground="):] {
			case "0", "f", "F", "false", "FALSE", "False":
			default:
				return false
			}
		}
	}
	return true
}

func hasPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && s[:len(prefix)] == prefix
}

// base is filepath.Base for a program name: what follows its last slash.
func base(name string) string {
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			return name[i+1:]
		}
	}
	return name
}

// Start starts this binary with args (its name left out), stdin, stdout
// and stderr on /dev/null until the spec it is sent names its log, in a
// session of its own, with the write end of the ready pipe as fd 3 and
// the read end of the spec pipe as fd 4.
func Start(args []string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyW.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		readyR.Close()
		return nil, err
	}
	defer specR.Close()
	p, err := os.StartProcess(self, append([]string{self}, args...), &os.ProcAttr{
		Env:   append(os.Environ(), ReadyEnv+"=3", SpecEnv+"=4"),
		Files: []*os.File{null, null, null, readyW, specR},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		readyR.Close()
		specW.Close()
		return nil, err
	}
	return &Proc{P: p, Ready: readyR, Spec: specW}, nil
}
