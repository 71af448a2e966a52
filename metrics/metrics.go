// Package metrics exposes what cowfs's long-lived processes (a mount, a
// restore, a master) count, for Prometheus: one registry per process,
// served on /metrics (--metrics-addr).
//
// It owns the Prometheus side only. The engine (cow), the kernel adapter
// (fs) and the wire (remote) keep plain counters and offer a hook or two;
// this package reads those counters at scrape time, through the
// functions it is handed, and times what they let it wrap (the FUSE
// requests, gRPC calls). It imports none of them, so fs, remote and cow
// stay free of Prometheus, and a workspace opened without metrics pays
// nothing for them.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the Go runtime's and the
// process's collectors (memory, goroutines, CPU, open descriptors): one
// per process, handed to what registers its own.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves a registry's metrics over HTTP on /metrics.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// PprofEnv, set to 1 in a process's environment, has its metrics server
// also serve Go's profiles on /debug/pprof/: for profiling a mount or a
// master under a real load (docs/benchmarks.md). Off by default, as a
// profile shows the process's code paths and costs its CPU.
const PprofEnv = "COWFS_PPROF"

// Listen starts serving g on addr (HOST:PORT; port 0 picks a free one).
// It returns once the address is bound, so a scrape right after finds it.
func Listen(addr string, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if err := CheckAddr(addr); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		// A scrape that stalls must not pile up goroutines.
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	}))
	if os.Getenv(PprofEnv) == "1" {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		log.Warn("serving Go profiles on /debug/pprof/ beside the metrics", "env", PprofEnv)
	}
	s := &Server{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return s, nil
}

// CheckAddr refuses an address Listen cannot listen on for its form.
func CheckAddr(addr string) error {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return fmt.Errorf("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9420", addr)
	}
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops listening, lets scrapes in flight finish for a few seconds,
// and returns once the server is gone. A nil Server is closed already.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = s.srv.Close()
	}
	<-s.done
	return err
}

// durationBuckets are the buckets of the histograms of requests, from a
// FUSE request answered from memory to a fetch at the end of
// --io-timeout: 10 µs to about 42 s, four times wider each.
var durationBuckets = prometheus.ExponentialBuckets(10e-6, 4, 12)

// longBuckets are those of snapshots and scans: 1 ms to about 17 min.
var longBuckets = prometheus.ExponentialBuckets(1e-3, 4, 11)
