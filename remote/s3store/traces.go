package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// A bucket keeps, as a master does (decision 0070), the last trace a
// worker's mount of each subtree and snapshot put: traces/<32 hex>
// (remote.TraceKey), the text a worker keeps beside its cache. It is the
// one key a worker overwrites: the last put wins, and a reader gets
// either trace whole (S3 writes a key whole). gc removes those not put
// for traceAge.
const tracesDir = "traces/"

// TraceAge is how long gc keeps a trace no one put again.
const TraceAge = 30 * 24 * time.Hour

// traceAge is TraceAge, a variable for tests.
var traceAge = TraceAge

func (s *Store) traceKey(sub, snapshot string) (string, error) {
	name, err := remote.TraceName(sub, snapshot)
	if err != nil {
		return "", err
	}
	return s.key(tracesDir + name), nil
}

// PutTrace keeps t as the trace of subtree sub restoring snapshot ("" for
// a published version), in one request within the store's timeout.
func (s *Store) PutTrace(ctx context.Context, sub, snapshot string, t *remote.Trace) error {
	key, err := s.traceKey(sub, snapshot)
	if err != nil {
		return fmt.Errorf("put trace: %w", err)
	}
	if err := s.putOver(ctx, key, remote.EncodeTrace(t)); err != nil {
		return fmt.Errorf("put trace: %w", err)
	}
	return nil
}

// putOver writes b at key, over what is there, in one request within
// the store's timeout.
func (s *Store) putOver(ctx context.Context, key string, b []byte) error {
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.puts.Add(1)
	if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key),
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))),
	}); err != nil {
		return s.wrap("put", key, err)
	}
	s.bytesOut.Add(int64(len(b)))
	return nil
}

// GetTrace returns the bucket's trace of subtree sub restoring snapshot,
// parsed; remote.ErrNoTrace when there is none.
func (s *Store) GetTrace(ctx context.Context, sub, snapshot string) (*remote.Trace, error) {
	key, err := s.traceKey(sub, snapshot)
	if err != nil {
		return nil, fmt.Errorf("get trace: %w", err)
	}
	b, err := s.getKey(ctx, key)
	if errors.Is(err, object.ErrNotFound) {
		return nil, remote.ErrNoTrace
	}
	if err != nil {
		return nil, fmt.Errorf("get trace: %w", err)
	}
	return remote.ParseTrace(b, s.URL()+"/"+tracesDir)
}

// gcTraces removes the traces not put for traceAge (dryRun: counts them).
func (s *Store) gcTraces(ctx context.Context, st *GCStats, start time.Time, dryRun bool) error {
	var old []string
	if err := s.listObjects(ctx, tracesDir, func(name string, mod time.Time) bool {
		if start.Sub(mod) > traceAge {
			old = append(old, name)
		}
		return true
	}); err != nil {
		return err
	}
	for _, name := range old {
		if !dryRun {
			if err := s.deleteKey(ctx, s.key(tracesDir+name)); err != nil {
				return err
			}
		}
		st.TracesRemoved++
	}
	return nil
}
