package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Master holds the metrics of a master (cowfs serve): its calls, by
// method and code, the bytes it sent, its scans of the export and the
// calls and connections it refused.
type Master struct {
	reg      prometheus.Registerer
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	scans    *prometheus.HistogramVec
}

// NewMaster registers a master's metrics with reg.
func NewMaster(reg prometheus.Registerer) (*Master, error) {
	m := &Master{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cowfs_master_requests_total",
			Help: "gRPC calls answered, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cowfs_master_request_duration_seconds",
			Help:    "How long gRPC calls took to answer, by method; a stream until its last message.",
			Buckets: durationBuckets,
		}, []string{"method"}),
		scans: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cowfs_master_scan_duration_seconds",
			Help:    "Scans of the export into a version, by result (ok, error), and how long each took.",
			Buckets: longBuckets,
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "error"} {
		m.scans.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.scans} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// ServerOptions are the gRPC server options that count every call. They
// must come before any other interceptor (the token check), so that
// refused calls are counted too.
func (m *Master) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.unary), grpc.ChainStreamInterceptor(m.stream)}
}

func (m *Master) observe(method string, start time.Time, err error) {
	m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
}

func (m *Master) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *Master) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

// ObserveScan records a scan of the export that took took; err is its
// outcome.
func (m *Master) ObserveScan(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.scans.WithLabelValues(result).Observe(took.Seconds())
}

// MasterCounts are the master's counters (remote.Server's), read at
// each scrape.
type MasterCounts struct {
	// SentBytes are object bytes sent to workers.
	SentBytes int64
	// TokenRefused counts calls refused for a missing or wrong token;
	// TLSFailed connections whose TLS handshake failed.
	TokenRefused, TLSFailed int64
}

// CountMaster registers the master's counters, read from read at each
// scrape.
func (m *Master) CountMaster(read func() MasterCounts) error {
	return m.reg.Register(&fields[MasterCounts]{read: read, list: []field[MasterCounts]{
		{"cowfs_master_sent_bytes_total", "Object bytes sent to workers.", nil,
			prometheus.CounterValue, func(c MasterCounts) float64 { return float64(c.SentBytes) }},
		{"cowfs_master_auth_failures_total", "Calls refused for a missing or wrong token (reason token), and connections whose TLS handshake failed (reason tls).",
			prometheus.Labels{"reason": "token"}, prometheus.CounterValue, func(c MasterCounts) float64 { return float64(c.TokenRefused) }},
		{"cowfs_master_auth_failures_total", "Calls refused for a missing or wrong token (reason token), and connections whose TLS handshake failed (reason tls).",
			prometheus.Labels{"reason": "tls"}, prometheus.CounterValue, func(c MasterCounts) float64 { return float64(c.TLSFailed) }},
	}})
}
