package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/metrics"
	"github.com/cowfs/cowfs/remote"
)

type serveFlags struct {
	root, listen    string
	tokenFile       string
	tlsCert, tlsKey string
	keepVersions    int
	serveSnapshots  bool
	metricsAddr     string
	log             logFlags
}

func newServeCmd(g *globals) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve --root DIR",
		Short: "Export DIR to workers (the master's side of mount --remote)",
		Long: `Serve DIR over gRPC to workers that mount it with cowfs mount --remote.

When a worker mounts, the master scans DIR (re-reading only files whose size,
mtime or ctime changed since the last scan) into content-addressed objects in
its state directory, and hands out that version. It watches DIR with inotify,
so a mount after no change gets the version last scanned at once; DIR is also
scanned again every minute, for changes inotify does not report (writes through
a shared mapping, or on a network filesystem by another host). Workers fetch directories and
chunks of files by digest when they use them, and check every byte. Running
mounts keep reading the version they started with however DIR changes; the
newest --keep-versions versions are kept (run cowfs gc on the master to free
older ones).

Workers can restore (cowfs restore --remote) the snapshots workers pushed
(cowfs snapshot --push), which the master keeps apart from its own: cowfs
snapshots lists them as pushed/NAME. A push never takes a name already pushed.

Nothing outside DIR is served: symlinks are served as symlinks, never
followed, and requests for ".." or absolute paths are refused. The master's
own snapshots (cowfs snapshot with this state directory) are not served, as
they may be of trees outside DIR: a worker asking for one is told there is no
such snapshot. --serve-snapshots serves them too, and with them the trees they
were taken of, outside DIR or not; a name both a pushed snapshot and the
master's own hold then restores the pushed one, and a push may not take a name
the master's own snapshot holds. Objects are fetched by digest from the store
the master's own snapshots share: a worker gets one only by naming its
SHA-256, which it learns from a tree it was served, from the content itself,
or from whoever can read the master's state or logs. To keep snapshots wholly
apart from workers, serve with a --state of its own.

The default address is loopback; to serve other machines give --listen,
--token-file and, across an untrusted network, --tls-cert and --tls-key. The
gRPC health service answers without a token. SIGTERM or SIGINT stop serving;
SIGHUP or SIGUSR1 reopen --log-file (for logrotate).`,
		Example: `  # on the master
  head -c 32 /dev/urandom | base64 > /etc/cowfs/token
  cowfs serve --root /srv/spiders --listen 0.0.0.0:7420 --token-file /etc/cowfs/token \
      --tls-cert /etc/cowfs/cert.pem --tls-key /etc/cowfs/key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.root, "root", "", "directory to export (required)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7420", "address to listen on")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token every call must carry")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve TLS with this certificate (PEM; needs --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fl.IntVar(&f.keepVersions, "keep-versions", 32, "how many of the newest versions to keep for running mounts")
	fl.BoolVar(&f.serveSnapshots, "serve-snapshots", false, "let workers restore the master's own snapshots too, including those of trees outside DIR")
	registerMetricsAddr(fl, &f.metricsAddr)
	f.log.register(fl, "stderr")
	cmd.MarkFlagRequired("root")
	return cmd
}

func runServe(g *globals, f *serveFlags) error {
	if err := f.log.check(); err != nil {
		return err
	}
	root, err := filepath.Abs(f.root)
	if err != nil {
		return err
	}
	if st, err := os.Stat(root); err != nil {
		return fmt.Errorf("--root: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("--root %s is not a directory", root)
	}
	if f.keepVersions < 1 {
		return errors.New("--keep-versions must be at least 1")
	}
	if f.metricsAddr != "" {
		if err := metrics.CheckAddr(f.metricsAddr); err != nil {
			return err
		}
	}
	cfg := remote.ServerConfig{
		Root: root, Objects: statedir.ObjectsDir(g.state), Refs: statedir.RefsDir(g.state), Traces: statedir.TracesDir(g.state),
		KeepVersions: f.keepVersions, ServeSnapshots: f.serveSnapshots,
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if cfg.Token = strings.TrimSpace(string(b)); cfg.Token == "" {
			return fmt.Errorf("--token-file %s is empty", f.tokenFile)
		}
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	out, err := openLogOutput(f.log.file)
	if err != nil {
		return err
	}
	h, err := f.log.handler(out, false)
	if err != nil {
		return err
	}
	log := slog.New(h)
	setDefault(log, false)
	cfg.Logger = log
	var mx *metrics.Master
	reg := metrics.NewRegistry()
	if f.metricsAddr != "" {
		if mx, err = metrics.NewMaster(reg); err != nil {
			return err
		}
		cfg.ServerOptions, cfg.ScanDone = mx.ServerOptions(), mx.ObserveScan
	}
	defer reopenOnSignal(out, log)()
	srv, err := remote.NewServer(cfg)
	if err != nil {
		return err
	}
	ms, err := serveMasterMetrics(f.metricsAddr, reg, mx, srv, log)
	if err != nil {
		srv.Stop()
		return err
	}
	defer ms.Close()
	l, err := net.Listen("tcp", f.listen)
	if err != nil {
		srv.Stop()
		return fmt.Errorf("listen: %w", err)
	}
	log.Info("serving", "root", root, "addr", l.Addr().String(), "tls", cfg.TLS != nil, "token", cfg.Token != "",
		"serve_snapshots", cfg.ServeSnapshots)
	if a, ok := l.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() && cfg.Token == "" {
		// Allowed (a private network may be enough), but said: anyone
		// who reaches the port reads the whole export and can push.
		log.Warn("serving beyond this machine without --token-file: anyone who can reach the address can read the export and push snapshots", "addr", l.Addr().String())
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.Info("stopping", "signal", s.String())
		sdNotify(log, daemon.SdNotifyStopping)
		srv.GracefulStop()
	}()
	// Serve takes calls from here on: the listener queues them until
	// then.
	sdNotify(log, daemon.SdNotifyReady)
	if err := srv.Serve(l); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// serveMasterMetrics serves reg on addr, with srv's counters read into mx
// at each scrape; nothing without an address.
func serveMasterMetrics(addr string, reg *prometheus.Registry, mx *metrics.Master, srv *remote.Server, log *slog.Logger) (*metrics.Server, error) {
	if addr == "" {
		return nil, nil
	}
	err := mx.CountMaster(func() metrics.MasterCounts {
		token, tls := srv.Refused()
		return metrics.MasterCounts{SentBytes: srv.BytesSent(), TokenRefused: token, TLSFailed: tls}
	})
	if err != nil {
		return nil, err
	}
	return metrics.Listen(addr, reg, log)
}
