package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// logFlags are the logging flags mount, restore and serve share.
type logFlags struct {
	level, format, file string
}

func (l *logFlags) register(fl *pflag.FlagSet, fileDefault string) {
	fl.StringVar(&l.level, "log-level", "info", "log lines at this level and above: debug, info, warn or error")
	fl.StringVar(&l.format, "log-format", "text", "text (key=value) or json (one object a line)")
	fl.StringVar(&l.file, "log-file", "", "append the log to this file, reopened on SIGHUP or SIGUSR1 (default: "+fileDefault+")")
}

// handler returns the log handler the flags ask for, writing to w; debug
// (--debug) lowers the level to debug.
func (l logFlags) handler(w io.Writer, debug bool) (slog.Handler, error) {
	var level slog.Level
	if l.level == "" {
		l.level = "info" // the mount(8) helper has no such flag
	}
	if err := level.UnmarshalText([]byte(l.level)); err != nil || !strings.EqualFold(l.level, level.String()) {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	if debug {
		level = slog.LevelDebug
	}
	o := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "", "text":
		return slog.NewTextHandler(w, o), nil
	case "json":
		return slog.NewJSONHandler(w, o), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.format)
}

// check refuses bad flags before anything is started.
func (l logFlags) check() error {
	_, err := l.handler(io.Discard, false)
	return err
}

// args are the flags that give a background mount process the same log;
// the mount(8) helper leaves level and format to their defaults.
func (l logFlags) args(file string) []string {
	args := []string{"--log-file", file}
	if l.level != "" {
		args = append(args, "--log-level", l.level)
	}
	if l.format != "" {
		args = append(args, "--log-format", l.format)
	}
	return args
}

// setDefault makes log the process's default logger. The log package's
// lines, through which go-fuse logs each request with --debug, are then
// written at debug level if debug, else at info.
func setDefault(log *slog.Logger, debug bool) {
	slog.SetDefault(log)
	if debug {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
}

// logOutput is where a process's log goes: a file, reopened by path when
// logrotate has moved it, or stderr.
type logOutput struct {
	path string // "": stderr
	mu   sync.Mutex
	f    *os.File
	// fds are the process's descriptors (stdout, stderr) that were the
	// file when it was opened: a background mount's, which its parent
	// pointed there. They follow the file when it is reopened, so that
	// what the runtime writes there (a panic) lands in the current log.
	fds []int
}

// openLogOutput opens path for appending; "" is stderr.
func openLogOutput(path string) (*logOutput, error) {
	o := &logOutput{path: path}
	if path == "" {
		return o, nil
	}
	f, err := openLogFile(path)
	if err != nil {
		return nil, err
	}
	o.f = f
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err == nil {
		for _, fd := range []int{1, 2} {
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Dev == fst.Dev && st.Ino == fst.Ino {
				o.fds = append(o.fds, fd)
			}
		}
	}
	return o, nil
}

func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, nil
}

func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return os.Stderr.Write(p)
	}
	return o.f.Write(p)
}

// reopen opens the log's path again, a new file if the old one was moved;
// on failure the old file stays in use. It reports whether there was a
// file to reopen.
func (o *logOutput) reopen() (bool, error) {
	if o.path == "" {
		return false, nil
	}
	f, err := openLogFile(o.path)
	if err != nil {
		return true, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, fd := range o.fds {
		if err := unix.Dup3(int(f.Fd()), fd, 0); err != nil {
			f.Close()
			return true, fmt.Errorf("reopen log %s: %w", o.path, err)
		}
	}
	o.f.Close()
	o.f = f
	return true, nil
}

// reopenOnSignal reopens out on SIGHUP and SIGUSR1, logrotate's signals,
// until stop is called. Neither signal stops the process: a hangup of the
// terminal that started a mount must not take the workspace from the
// task that uses it. Call it before anything is mounted, so that no
// SIGHUP finds the default action, which is to exit.
func reopenOnSignal(out *logOutput, log *slog.Logger) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				switch file, err := out.reopen(); {
				case err != nil:
					log.Error("reopen the log", "signal", s.String(), "err", err)
				case file:
					log.Info("reopened the log", "signal", s.String(), "file", out.path)
				default:
					log.Info("the log is stderr: nothing to reopen", "signal", s.String())
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}
