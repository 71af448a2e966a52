package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
)

type mountFlags struct {
	lower, upper, work string
	snapshot           string // restore this snapshot instead of mounting lower
	foreground         bool
	foregroundSet      bool // --foreground was given, true or false
	debug              bool
	passthrough        bool
	passthroughLower   bool
	writebackCache     bool
	timeout            time.Duration
	procs              int
	readAhead          string
	reserve            string
	remote             remoteFlags
	log                logFlags
	access             accessFlags
	timeoutSet         bool // --timeout was given
	metricsAddr        string
	readOnly           bool
}

func newMountCmd(g *globals) *cobra.Command {
	f := &mountFlags{}
	cmd := &cobra.Command{
		Use:   "mount MNT (--lower DIR | --remote ADDR|s3://BUCKET/PREFIX)",
		Short: "Mount a copy-on-write workspace at MNT",
		Long: `Mount a workspace at MNT: DIR read-only beneath a private writable upper.

The command returns 0 only once MNT serves requests; if the workspace cannot
be mounted it says why and exits non-zero, and nothing is left mounted. The
mount process runs in the background (log: <upper's parent>/mount.log) unless
--foreground is given; SIGTERM or SIGINT unmount it cleanly, SIGHUP or
SIGUSR1 reopen its log (for logrotate).

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
made over it; a new mountpoint gets the master's newest version.

With --remote s3://BUCKET/PREFIX the lower is the newest version cowfs
publish made visible there, with no master: read and pinned the same way,
--path a subtree of it. Credentials, region and endpoint come from the AWS
environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE,
AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, or --s3-endpoint).`,
		Example: `  # a workspace over a spider's code
  cowfs mount /root/crawlab_workspace/spider1 --lower /srv/spiders/spider1

  # keep the upper in a chosen place, stay attached, log every request
  cowfs mount /mnt/ws --lower /srv/base --upper /data/ws/upper --work /data/ws/work --foreground --debug

  # a workspace over the master's export of spider1, fetched lazily
  cowfs mount /root/crawlab_workspace/spider1 --remote master:7420 --path spider1 --token-file /etc/cowfs/token

  # the newest version published to a bucket
  cowfs mount /root/crawlab_workspace/spider1 --remote s3://cowfs/spiders/spider1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.timeoutSet = cmd.Flags().Changed("timeout")
			f.foregroundSet = cmd.Flags().Changed("foreground")
			f.remote.changed = cmd.Flags().Changed
			f.access.changed = cmd.Flags().Changed
			return runMount(g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.lower, "lower", "", "read-only lower directory (or --remote)")
	fl.StringVar(&f.upper, "upper", "", "upper directory (default: under --state)")
	fl.StringVar(&f.work, "work", "", "work directory, on the upper's filesystem (required with --upper)")
	fl.BoolVar(&f.foreground, "foreground", false, "stay attached until unmounted (the default as PID 1, a container's entrypoint)")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount read-only: every change gets EROFS (mount(8): ro)")
	fl.BoolVar(&f.passthrough, "passthrough", false, "let the kernel read and write files born in the upper directly (faster; snapshots are then not atomic for files written that way)")
	registerWriteback(fl, f)
	fl.BoolVar(&f.passthroughLower, "passthrough-lower", false, "let the kernel read lower files directly (warm reads at native speed; a descriptor opened that way keeps reading the lower's bytes if another then writes the file)")
	var noPassthrough bool
	fl.BoolVar(&noPassthrough, "no-passthrough", false, "the default; kept for scripts")
	fl.MarkHidden("no-passthrough")
	fl.DurationVar(&f.timeout, "timeout", cowfs.DefaultStartTimeout, "how long to wait for the mount to become ready (with --remote, unless set: 5m plus --io-timeout, as the master may scan a big export first)")
	fl.IntVar(&f.procs, "procs", cowfs.DefaultProcs(), "CPUs the mount process may use at once (GOMAXPROCS); one more while it starts, fetches from its remote, or takes in a snapshot's lower")
	registerReadAhead(fl, f)
	registerMetricsAddr(fl, &f.metricsAddr)
	f.access.register(fl)
	f.remote.register(fl)
	f.log.register(fl, "<upper's parent>/mount.log in the background, stderr with --foreground")
	return cmd
}

// registerMetricsAddr adds --metrics-addr, which mount, restore and serve
// share.
func registerMetricsAddr(fl *pflag.FlagSet, addr *string) {
	fl.StringVar(addr, "metrics-addr", "", "serve Prometheus metrics on http://HOST:PORT/metrics (e.g. 127.0.0.1:9420; docs/metrics.md)")
}

func runMount(g *globals, f *mountFlags, mnt string) (err error) {
	// A mount process (spawnDaemon's child) gets its spec from its
	// parent and checks it again, as the mountpoint may have changed
	// since its parent looked (another mount there won the race); what
	// it finds wrong goes to the parent, which prints it, not only to
	// the mount's log.
	pipe := readyPipe()
	if pipe != nil {
		s, logFile, err := specFromParent()
		if errors.Is(err, errNotHandedOver) {
			// Started ahead (internal/prestart) for a command that
			// ended without a mount to hand over.
			pipe.Close()
			return nil
		}
		if err == nil {
			err = s.Validate()
		}
		if err != nil {
			fmt.Fprintln(pipe, failureLine(err))
			pipe.Close()
			return err
		}
		lf := f.log
		if logFile != "" {
			lf.file = logFile
		}
		return serveMount(s, lf, pipe)
	}
	if err := f.log.check(); err != nil {
		return err
	}
	s, err := f.spec(g, mnt)
	if err != nil {
		return err
	}
	if err := s.Validate(); err != nil {
		return err
	}
	if chooseForeground(os.Getpid(), f.foreground, f.foregroundSet) {
		return serveMount(s, f.log, nil)
	}
	if s, err = s.WithDefaults(); err != nil {
		return err
	}
	var logDir string
	switch {
	case s.Upper != "":
		logDir = s.Work
	case s.Lower.Snapshot != "":
		logDir = filepath.Join(s.State, "restores")
	default:
		u, _ := statedir.MountDirs(s.State, s.Mountpoint)
		logDir = filepath.Dir(u)
	}
	logPath := filepath.Join(logDir, "mount.log")
	if f.log.file != "" {
		if logPath, err = filepath.Abs(f.log.file); err != nil {
			return err
		}
	} else if err := os.MkdirAll(logDir, 0o700); err != nil {
		return err
	}
	// The mount process gets the spec itself (spawnDaemon); its argv
	// names it for ps and for cowfs unmount, and says where to log.
	args := []string{"--state", s.State, "mount", s.Mountpoint, "--foreground"}
	if s.Lower.Snapshot != "" {
		args = []string{"--state", s.State, "restore", s.Lower.Snapshot, s.Mountpoint, "--foreground"}
	}
	args = append(args, f.log.args(logPath)...)
	return spawnDaemon(args, s, logPath, s.Options.StartTimeout)
}

// chooseForeground decides whether a mount serves in this process: as
// --foreground says if it was given, else when this process is PID 1. A
// container's entrypoint is PID 1, and a mount process left in the
// background would be killed with the container as soon as PID 1
// returned.
func chooseForeground(pid int, foreground, given bool) bool {
	if given {
		return foreground
	}
	return pid == 1
}

// spec turns the flags into a workspace spec; Spec.Validate checks what
// the flags' parsing does not.
func (f *mountFlags) spec(g *globals, mnt string) (cowfs.Spec, error) {
	readAhead, err := readAheadBytes(f.readAhead)
	if err != nil {
		return cowfs.Spec{}, err
	}
	reserve, err := reserveBytes(f.reserve)
	if err != nil {
		return cowfs.Spec{}, err
	}
	s := cowfs.Spec{
		Mountpoint: mnt, State: g.state, Upper: f.upper, Work: f.work,
		Lower: cowfs.Lower{Dir: f.lower, Snapshot: f.snapshot},
		Options: cowfs.Options{
			WritebackCache: f.writebackCache, Passthrough: f.passthrough, PassthroughLower: f.passthroughLower,
			Procs: f.procs, ReadAhead: readAhead, Reserve: reserve, Debug: f.debug,
			MetricsAddr: f.metricsAddr, ReadOnly: f.readOnly,
		},
	}
	if f.timeoutSet {
		s.Options.StartTimeout = f.timeout
	}
	if err := f.access.apply(&s.Options); err != nil {
		return cowfs.Spec{}, err
	}
	if f.remote.addr == "" {
		return s, f.remote.checkLocal()
	}
	s.Lower.Remote, err = f.remote.spec()
	return s, err
}

// accessFlags are who may use a mount and what owner and mode its files
// are shown with; mount and restore share them.
type accessFlags struct {
	allowOther bool
	uid, gid   uint32
	umask      string
	// changed reports whether a flag was given (nil: none was).
	changed func(name string) bool
}

func (a *accessFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&a.allowOther, "allow-other", os.Geteuid() == 0, "let other users than the one who mounts use the workspace (on for root; for others /etc/fuse.conf must say user_allow_other)")
	fl.Uint32Var(&a.uid, "uid", 0, "show every file as owned by this uid (default: the files' own owners)")
	fl.Uint32Var(&a.gid, "gid", 0, "show every file with this group id (default: the files' own groups)")
	fl.StringVar(&a.umask, "umask", "", "clear these octal mode bits from every file shown (e.g. 022; default: none)")
}

// apply puts the flags that were given into o.
func (a *accessFlags) apply(o *cowfs.Options) error {
	if a.changed == nil {
		return nil
	}
	if a.changed("allow-other") {
		o.AllowOther = &a.allowOther
	}
	if a.changed("uid") {
		o.Uid = &a.uid
	}
	if a.changed("gid") {
		o.Gid = &a.gid
	}
	if a.umask != "" {
		m, err := strconv.ParseUint(a.umask, 8, 32)
		if err != nil || m > 0o777 {
			return fmt.Errorf("--umask %q: want octal mode bits, 0 to 0777 (e.g. 022)", a.umask)
		}
		o.Umask = uint32(m)
	}
	return nil
}

// registerWriteback adds --writeback-cache, which mount and restore share.
func registerWriteback(fl *pflag.FlagSet, f *mountFlags) {
	fl.BoolVar(&f.writebackCache, "writeback-cache", false, "let the kernel gather small writes and write them back later (about 10x faster 4 KiB writes; data not fsync'd is lost if the mount process dies first; not with --passthrough*)")
}

// registerReadAhead adds --readahead and --reserve, which mount and
// restore share.
func registerReadAhead(fl *pflag.FlagSet, f *mountFlags) {
	fl.StringVar(&f.readAhead, "readahead", fmt.Sprintf("%dK", cowfs.DefaultReadAhead>>10), "how far the kernel reads ahead of a sequential reader (e.g. 512K, 1M; 0 keeps the kernel's 128K; "+sizeHelp+"); needs root")
	fl.StringVar(&f.reserve, "reserve", fmt.Sprintf("%dM", cowfs.DefaultReserve>>20), "space kept free on the upper's filesystem for cowfs's metadata: writes get ENOSPC below it (0: none, and a full disk can then crash the mount; "+sizeHelp+")")
}

// reserveBytes turns --reserve into cowfs.Options.Reserve; "" is the
// default.
func reserveBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, usagef("--reserve: %w", err)
	}
	if n == 0 {
		return -1, nil
	}
	if n < 16<<20 {
		return 0, usagef("--reserve %s: want 0 or at least 16M (badger's memtables are 8M each)", s)
	}
	return n, nil
}

// readAheadBytes turns --readahead into cowfs.Options.ReadAhead; "" is
// the default.
func readAheadBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseSize(s)
	if err != nil {
		return 0, usagef("--readahead: %w", err)
	}
	if n == 0 {
		return -1, nil
	}
	if n < 4<<10 || n > 1<<30 {
		return 0, usagef("--readahead %s: want 0 or between 4K and 1G", s)
	}
	return n, nil
}

// serveMount mounts s in this process and serves until unmounted. It
// reports readiness (or the error) on pipe when there is one.
func serveMount(s cowfs.Spec, lf logFlags, pipe io.WriteCloser) error {
	out, err := openLogOutput(lf.file)
	if err != nil {
		if pipe != nil {
			fmt.Fprintf(pipe, "%v\n", err)
			pipe.Close()
		}
		return err
	}
	h, err := lf.handler(out, s.Options.Debug)
	if err == nil {
		s, err = s.WithDefaults()
	}
	if err != nil {
		if pipe != nil {
			fmt.Fprintf(pipe, "%v\n", err)
			pipe.Close()
		}
		return err
	}
	// Every line names the workspace: several mounts may log to one
	// place (a restore's log, a journal, a container's output).
	log := slog.New(h).With("mountpoint", s.Mountpoint)
	setDefault(log, s.Options.Debug)
	log.Debug("open step", "step", "log set up", "took", time.Since(started))
	s.Options.Logger = log
	runtime.GOMAXPROCS(s.Options.Procs)
	// Until the mount serves and its caller is told: the start runs
	// badger's, gRPC's and go-fuse's goroutines at once, and with the
	// one P a mount has by default the mount waited for them.
	startDone := fs.ExtraProc()
	defer startDone()
	gcDone := holdGC()
	defer gcDone()
	// And while a remote lower fetches: verifying, storing and handing
	// over what comes in otherwise takes turns with the requests on the
	// one P.
	s.Options.Fetching = fs.ExtraProc
	// Before the mount appears: a signal sent as soon as it is visible
	// must unmount it (or reopen the log), not kill the process and
	// leave the mount dead.
	stopReopen := reopenOnSignal(out, log)
	defer stopReopen()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ws, err := openWatched(s, sigs, log)
	if err != nil {
		if pipe != nil {
			fmt.Fprintln(pipe, failureLine(err))
			pipe.Close()
		}
		return err
	}
	log.Info("mounted", "lower", s.Lower.Dir, "source", ws.Status().Source, "took", time.Since(started))
	if unrecord, err := recordState(s.Mountpoint, s.State); err != nil {
		// Commands find the mount with --state still.
		log.Warn("commands will need --state for this mount", "err", err)
	} else {
		defer unrecord()
	}
	if pipe != nil {
		_, werr := fmt.Fprintln(pipe, "ok")
		pipe.Close()
		if werr != nil {
			// cowfs mount gave up on this mount (a signal, its
			// timeout) or died, and told its caller it failed: a
			// mount appearing now would be one nobody knows of.
			log.Error("nobody waits for this mount; unmounting", "err", werr)
			if err := ws.Close(); err != nil {
				log.Error("unmount", "err", err)
			}
			return fmt.Errorf("mount abandoned by its caller: %w", werr)
		}
	}
	startDone()
	gcDone()
	sdNotify(log, daemon.SdNotifyReady)
	done := make(chan struct{})
	go func() {
		ws.Wait()
		close(done)
	}()
	select {
	case sig := <-sigs:
		log.Info("unmounting", "signal", sig.String())
	case <-done:
		// Unmounted from outside (cowfs unmount, umount, fusermount -u).
	}
	sdNotify(log, daemon.SdNotifyStopping)
	if err := ws.Close(); err != nil {
		log.Error("unmount", "err", err)
		return err
	}
	log.Info("unmounted")
	return nil
}

// openWatched opens s. A signal meanwhile (the setup can wait long on a
// master) gives up the open if nothing is mounted yet; if the mount was
// made in the meantime, the signal is put back on sigs, to unmount it as
// any signal to a mounted workspace does.
func openWatched(s cowfs.Spec, sigs chan os.Signal, log *slog.Logger) (*cowfs.Workspace, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened, watcherDone := make(chan struct{}), make(chan struct{})
	var stopped os.Signal
	go func() {
		defer close(watcherDone)
		select {
		case stopped = <-sigs:
			cancel()
		case <-opened:
		}
	}()
	ws, err := cowfs.Open(ctx, s)
	close(opened)
	<-watcherDone
	switch {
	case stopped == nil:
		return ws, err
	case ws != nil:
		select {
		case sigs <- stopped:
		default: // another signal is already waiting there
		}
		return ws, nil
	default:
		log.Info("stopping before the mount was made", "signal", stopped.String())
		return nil, fmt.Errorf("mount stopped by %s", stopped)
	}
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
