package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/remote"
)

type mountFlags struct {
	lower, upper, work string
	snapshot           string // restore this snapshot instead of mounting lower
	foreground         bool
	debug              bool
	passthrough        bool
	passthroughLower   bool
	writebackCache     bool
	timeout            time.Duration
	procs              int
	readAhead          string
	reserve            string
	remote             remoteFlags
	timeoutSet         bool // --timeout was given
}

func newMountCmd(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "mount MNT (--lower DIR | --remote ADDR)",
		Short: "Mount a copy-on-write workspace at MNT",
		Long: `Mount a workspace at MNT: DIR read-only beneath a private writable upper.

The command returns 0 only once MNT serves requests; if the workspace cannot
be mounted it says why and exits non-zero, and nothing is left mounted. The
mount process runs in the background (log: <upper's parent>/mount.log) unless
--foreground is given; SIGTERM or SIGINT unmount it cleanly.

The upper lives under --state, keyed by MNT, so mounting the same MNT again
(after an unmount or a crash) finds the same upper. --upper and --work put it
elsewhere, as overlayfs's upperdir and workdir do.

With --remote the lower is the export of a master (cowfs serve): the mount
pins the version the master has now, fetches each directory when it is first
used and each file's bytes by chunk when read, checks every byte against its
digest, and keeps what it fetched in the state directory's cache, shared by
every mount of that state directory. It returns 0 only once the export's root
was fetched and verified; an unreachable master or a refused token fails the
mount with a message. A read the master cannot serve within --io-timeout gets
EIO. Mounting the same MNT again mounts the same version, since its upper was
made over it; a new mountpoint gets the master's newest version.`,
		Example: `  # a workspace over a spider's code
  cowfs mount /root/crawlab_workspace/spider1 --lower /srv/spiders/spider1

  # keep the upper in a chosen place, stay attached, log every request
  cowfs mount /mnt/ws --lower /srv/base --upper /data/ws/upper --work /data/ws/work --foreground --debug

  # a workspace over the master's export of spider1, fetched lazily
  cowfs mount /root/crawlab_workspace/spider1 --remote master:7420 --path spider1 --token-file /etc/cowfs/token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.timeoutSet = cmd.Flags().Changed("timeout")
			f.remote.changed = cmd.Flags().Changed
			return runMount(g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.lower, "lower", "", "read-only lower directory (or --remote)")
	fl.StringVar(&f.upper, "upper", "", "upper directory (default: under --state)")
	fl.StringVar(&f.work, "work", "", "work directory, on the upper's filesystem (required with --upper)")
	fl.BoolVar(&f.foreground, "foreground", false, "stay attached until unmounted")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fl.BoolVar(&f.passthrough, "passthrough", false, "let the kernel read and write files born in the upper directly (faster; snapshots are then not atomic for files written that way)")
	registerWriteback(fl, f)
	fl.BoolVar(&f.passthroughLower, "passthrough-lower", false, "let the kernel read lower files directly (warm reads at native speed; a descriptor opened that way keeps reading the lower's bytes if another then writes the file)")
	var noPassthrough bool
	fl.BoolVar(&noPassthrough, "no-passthrough", false, "the default; kept for scripts")
	fl.MarkHidden("no-passthrough")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the mount to become ready (with --remote, unless set: 5m plus --io-timeout, as the master may scan a big export first)")
	fl.IntVar(&f.procs, "procs", defaultProcs(), "CPUs the mount process may use at once (GOMAXPROCS)")
	registerReadAhead(fl, f)
	f.remote.register(fl)
	return cmd
}

func runMount(g *globals, f *mountFlags, mnt string) (err error) {
	// A mount process (spawnDaemon's child) checks everything again, as
	// the mountpoint may have changed since its parent looked (another
	// mount there won the race); what it finds wrong goes to the parent,
	// which prints it, not only to the mount's log.
	pipe := readyPipe()
	handedOff := false
	defer func() {
		if err != nil && pipe != nil && !handedOff {
			fmt.Fprintf(pipe, "%v\n", err)
			pipe.Close()
		}
	}()
	readAhead, err := readAheadBytes(f.readAhead)
	if err != nil {
		return err
	}
	reserve, err := reserveBytes(f.reserve)
	if err != nil {
		return err
	}
	if f.writebackCache && (f.passthrough || f.passthroughLower) {
		return fmt.Errorf("--writeback-cache cannot be combined with --passthrough or --passthrough-lower")
	}
	mnt, err = filepath.Abs(mnt)
	if err != nil {
		return err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("no /dev/fuse: load the fuse module (modprobe fuse) or give the container the device: %w", err)
	}
	var lower string
	isRemote := f.remote.addr != ""
	switch {
	case isRemote && f.lower != "":
		return fmt.Errorf("give either --lower or --remote, not both")
	case !isRemote && f.lower == "" && f.snapshot == "":
		return fmt.Errorf("no lower: give --lower DIR or --remote ADDR")
	case isRemote:
		if f.snapshot != "" && f.remote.path != "" {
			return fmt.Errorf("--path does not apply to a restore")
		}
		if err := f.remote.check(); err != nil {
			return err
		}
	case f.snapshot == "":
		if err := f.remote.checkLocal(); err != nil {
			return err
		}
		if lower, err = filepath.Abs(f.lower); err != nil {
			return err
		}
		if st, err := os.Stat(lower); err != nil {
			return fmt.Errorf("lower directory: %w", err)
		} else if !st.IsDir() {
			return fmt.Errorf("lower %s is not a directory", lower)
		}
	default:
		if err := f.remote.checkLocal(); err != nil {
			return err
		}
		d, err := refs.Open(fs.RefsDir(g.state))
		if err != nil {
			return err
		}
		if _, err := d.Get(f.snapshot); err != nil {
			return err
		}
	}
	if err := fs.CheckMountpoint(mnt); err != nil {
		return err
	}
	upper, work := f.upper, f.work
	if work != "" && upper == "" {
		return fmt.Errorf("--work was given without an upper directory (--upper)")
	}
	if upper != "" && work == "" {
		return fmt.Errorf("--upper needs --work, a work directory on the same filesystem")
	}
	if upper != "" {
		if upper, err = filepath.Abs(upper); err != nil {
			return err
		}
	}
	if work != "" {
		if work, err = filepath.Abs(work); err != nil {
			return err
		}
	}
	state, err := filepath.Abs(g.state)
	if err != nil {
		return err
	}
	// fs.New checks this too; here it comes before the log directory
	// (the work directory) is made, so a refused mount leaves nothing.
	if err := fs.CheckLayout(fs.Layout{Mountpoint: mnt, Lower: lower, Upper: upper, Work: work, State: state}); err != nil {
		return err
	}
	if pipe != nil || f.foreground {
		if f.procs > 0 {
			runtime.GOMAXPROCS(f.procs)
		}
		fsname := "cowfs:" + lower
		if f.snapshot != "" {
			fsname = "cowfs:snapshot:" + f.snapshot
		}
		var setup func(*fs.Options, *slog.Logger) (func(), error)
		if isRemote {
			setup = func(o *fs.Options, log *slog.Logger) (func(), error) {
				return setupRemote(&f.remote, f.snapshot, state, mnt, o, log)
			}
		}
		handedOff = true
		return serveMount(mnt, fs.Options{
			Lower: lower, Snapshot: f.snapshot, State: state, Upper: upper, Work: work,
			FsName: fsname, Debug: f.debug, Passthrough: f.passthrough,
			PassthroughLower: f.passthroughLower, ReadAhead: readAhead,
			WritebackCache: f.writebackCache, Reserve: reserve,
		}, setup, pipe)
	}
	logDir := filepath.Join(state, "mounts")
	if upper != "" {
		logDir = work
	} else {
		u, _ := fs.MountDirs(state, mnt)
		logDir = filepath.Dir(u)
	}
	args := []string{"--state", state, "mount", mnt, "--foreground"}
	if isRemote {
		args = append(args, f.remote.args()...)
	} else {
		args = append(args, "--lower", lower)
	}
	if f.snapshot != "" {
		args = []string{"--state", state, "restore", f.snapshot, mnt, "--foreground"}
		if isRemote {
			args = append(args, f.remote.args()...)
		}
		logDir = filepath.Join(state, "restores")
	}
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	if upper != "" {
		args = append(args, "--upper", upper, "--work", work)
	}
	if f.debug {
		args = append(args, "--debug")
	}
	if f.passthrough {
		args = append(args, "--passthrough")
	}
	if f.passthroughLower {
		args = append(args, "--passthrough-lower")
	}
	if f.writebackCache {
		args = append(args, "--writeback-cache")
	}
	if f.procs > 0 {
		args = append(args, "--procs", strconv.Itoa(f.procs))
	}
	args = append(args, "--readahead", f.readAhead, "--reserve", f.reserve)
	timeout := f.timeout
	if isRemote && !f.timeoutSet {
		// The master may have to scan a big export first.
		timeout = remote.ResolveTimeout + f.remote.ioTimeout
	}
	return spawnDaemon(args, filepath.Join(logDir, "mount.log"), timeout)
}

// registerWriteback adds --writeback-cache, which mount and restore share.
func registerWriteback(fl *pflag.FlagSet, f *mountFlags) {
	fl.BoolVar(&f.writebackCache, "writeback-cache", false, "let the kernel gather small writes and write them back later (about 10x faster 4 KiB writes; data not fsync'd is lost if the mount process dies first; not with --passthrough*)")
}

// registerReadAhead adds --readahead and --reserve, which mount and
// restore share.
func registerReadAhead(fl *pflag.FlagSet, f *mountFlags) {
	fl.StringVar(&f.readAhead, "readahead", "1M", "how far the kernel reads ahead of a sequential reader (e.g. 512K, 4M; 0 keeps the kernel's 128K); needs root")
	fl.StringVar(&f.reserve, "reserve", "64M", "space kept free on the upper's filesystem for cowfs's metadata: writes get ENOSPC below it (0: none, and a full disk can then crash the mount)")
}

// reserveBytes turns --reserve into fs.Options.Reserve.
func reserveBytes(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--reserve: %w", err)
	}
	if n == 0 {
		return -1, nil
	}
	if n < 16<<20 {
		return 0, fmt.Errorf("--reserve %s: want 0 or at least 16M (badger's memtables are 8M each)", s)
	}
	return n, nil
}

// readAheadBytes turns --readahead into fs.Options.ReadAhead.
func readAheadBytes(s string) (int64, error) {
	n, err := parseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--readahead: %w", err)
	}
	if n == 0 {
		return -1, nil
	}
	if n < 4<<10 || n > 1<<30 {
		return 0, fmt.Errorf("--readahead %s: want 0 or between 4K and 1G", s)
	}
	return n, nil
}

// defaultProcs is half the machine's CPUs, at least one. A FUSE server
// that may run on every CPU spins idle threads that compete with the very
// processes it serves: on a 2-CPU machine one P made creates 2-3x and
// writes 2x faster, and cost 20% on four parallel cold readers.
func defaultProcs() int { return max(1, runtime.NumCPU()/2) }

// serveMount mounts in this process and serves until unmounted. It reports
// readiness (or the error) on pipe when there is one.
func serveMount(mnt string, o fs.Options, setup func(*fs.Options, *slog.Logger) (func(), error), pipe interface {
	Write([]byte) (int, error)
	Close() error
}) error {
	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	o.Logger = log
	// Before the mount appears: a signal sent as soon as it is visible
	// must unmount it, not kill the process and leave it dead.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	var m *fs.Mount
	var err error
	if setup != nil {
		// Setup can wait long on a master; a signal meanwhile ends the
		// process at once, as nothing is mounted yet to undo. The
		// watcher is gone before the mount is made, so it cannot exit
		// in the middle of it.
		setupDone, watcherDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watcherDone)
			select {
			case s := <-sigs:
				log.Info("stopping before the mount was made", "signal", s.String())
				os.Exit(1)
			case <-setupDone:
			}
		}()
		var cleanup func()
		if cleanup, err = setup(&o, log); err == nil {
			defer cleanup()
		}
		close(setupDone)
		<-watcherDone
	}
	if err == nil {
		m, err = fs.New(mnt, o)
	}
	if err != nil {
		if pipe != nil {
			fmt.Fprintf(pipe, "%v\n", err)
			pipe.Close()
		}
		return err
	}
	log.Info("mounted", "mountpoint", mnt, "lower", o.Lower, "source", o.Source)
	if pipe != nil {
		_, werr := fmt.Fprintln(pipe, "ok")
		pipe.Close()
		if werr != nil {
			// cowfs mount gave up on this mount (a signal, its
			// timeout) or died, and told its caller it failed: a
			// mount appearing now would be one nobody knows of.
			log.Error("nobody waits for this mount; unmounting", "err", werr)
			if err := m.Unmount(); err != nil {
				log.Error("unmount", "err", err)
			}
			return fmt.Errorf("mount abandoned by its caller: %w", werr)
		}
	}
	done := make(chan struct{})
	go func() {
		m.Wait()
		close(done)
	}()
	select {
	case s := <-sigs:
		log.Info("unmounting", "signal", s.String())
		if err := m.Unmount(); err != nil {
			log.Error("unmount", "err", err)
			return err
		}
	case <-done:
		// Unmounted from outside (cowfs unmount, umount, fusermount -u).
		if err := m.Close(); err != nil {
			log.Error("close", "err", err)
			return err
		}
	}
	log.Info("unmounted", "mountpoint", mnt)
	return nil
}

// fusermountU unmounts as an unprivileged user, through the setuid helper.
func fusermountU(dir string, lazy bool) error {
	args := []string{"-u", dir}
	if lazy {
		args = []string{"-uz", dir}
	}
	for _, bin := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(bin); err == nil {
			out, err := exec.Command(p, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %v: %v: %s", bin, args, err, out)
			}
			return nil
		}
	}
	return fmt.Errorf("unmount %s: not permitted and no fusermount3 found", dir)
}
