// Package s3store keeps cowfs objects and published versions in an
// S3-compatible bucket (AWS S3, Ceph RGW, SeaweedFS, MinIO, ...), so that
// workers can read a spider with no cowfs process in the data path. It is
// an object.Store: objects by digest under a prefix, written once (a
// conditional write where the store has one), verified on every read.
// Configuration is the AWS tools' own (aws-sdk-go-v2's standard chain):
// credentials, AWS_REGION, AWS_ENDPOINT_URL(_S3). The bucket's layout is
// in docs/architecture.md and decision 0053.
//
// It never mounts: it is part of remote/, and so imports no go-fuse.
package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"google.golang.org/grpc/mem"

	"github.com/cowfs/cowfs/cow/object"
)

// Sentinels of the three ways a bucket can be out of reach, each with
// its own message (Open checks them first).
var (
	// ErrCredentials: the endpoint refused the credentials.
	ErrCredentials = errors.New("the object store refused the credentials")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("no such bucket")
	// ErrUnreachable: no answer from the endpoint.
	ErrUnreachable = errors.New("the object store does not answer")
)

// Defaults of Config's zero values.
const (
	DefaultTimeout     = time.Minute
	DefaultMaxAttempts = 4
	defaultRegion      = "us-east-1"
	// maxObject bounds what a Get reads: a chunk's blob is 1 MiB, a
	// file object 32 bytes a chunk, a tree about 100 bytes an entry; a
	// longer body is not an object cowfs wrote.
	maxObject = 256 << 20
)

// Config says which bucket and prefix, and how to reach them. Zero
// values take the AWS environment's (credentials, region, endpoint) and
// the defaults above.
type Config struct {
	// Bucket and Prefix (no leading or trailing slash; may be empty)
	// name where everything lives; ParseURL reads them from s3://B/P.
	Bucket, Prefix string
	// Endpoint overrides AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL. Any
	// custom endpoint is addressed path-style (endpoint/bucket/key),
	// which every S3-compatible store understands.
	Endpoint string
	// CAFile is a PEM bundle to trust for the endpoint's TLS.
	CAFile string
	// Region overrides AWS_REGION; without either, us-east-1.
	Region string
	// Timeout bounds each call (a Get, a Put, one page of a list), its
	// retries included, when the caller's context has no deadline.
	Timeout time.Duration
	// MaxAttempts bounds the tries of one request.
	MaxAttempts int
	// NoCheck leaves out Open's check, for a caller whose first request
	// follows at once and fails the same ways with the same errors (a
	// mount listing the newest version).
	NoCheck bool
	// IndexCache, if set, is a directory under which the Store keeps
	// the pack indexes it reads, in a directory of the endpoint's,
	// bucket's and prefix's own (decision 0081): an index is never
	// changed and is named by the SHA-256 of its bytes, so a later Store
	// of the same prefix (a worker's next mount) reads it from there,
	// not from the bucket. One a listing no longer finds (gc removed it)
	// is removed, and so are the directories of prefixes no load read
	// for 30 days.
	IndexCache string
	Log        *slog.Logger

	// transport, in tests, takes the requests instead of the network.
	transport http.RoundTripper
}

// ParseURL splits s3://BUCKET/PREFIX.
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3://BUCKET/PREFIX URL", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket", u)
	}
	for _, p := range strings.Split(prefix, "/") {
		if p == "." || p == ".." || (prefix != "" && p == "") {
			return "", "", fmt.Errorf("%q: the prefix %q has an empty, . or .. part", u, prefix)
		}
	}
	return bucket, prefix, nil
}

// Stats counts the requests a Store made, by kind, and the bytes moved.
type Stats struct {
	Gets, Puts, Heads, Lists int64
	BytesIn, BytesOut        int64
	// Indexes is how many pack indexes the Store knows, as of its last
	// load of them; IndexesKept counts those read from
	// Config.IndexCache, not the bucket.
	Indexes, IndexesKept int64
	// Retries counts attempts made again after one failed.
	Retries int64
}

// Store is a bucket prefix holding objects and versions.
type Store struct {
	cfg      Config
	client   *s3.Client
	getter   *getter                 // nil: GETs go through client (get.go)
	endpoint string                  // for messages
	creds    aws.CredentialsProvider // for messages

	gets, puts, heads, lists, bytesIn, bytesOut atomic.Int64
	indexes, indexesKept                        atomic.Int64
	retries                                     *atomic.Int64
	// packs is what the Store knows of the bucket's packs (packs.go).
	packs *packIndex
}

var _ object.Store = (*Store)(nil)

// Open makes a Store and checks, with one list request, that the bucket
// is there and takes the credentials: each way of failing gets its own
// error (ErrCredentials, ErrNoBucket, ErrUnreachable). With cfg.NoCheck
// it makes no request, and the first one the caller makes fails with
// those errors instead.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("no bucket given")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	retries := new(atomic.Int64)
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL_S3")
	}
	if endpoint == "" {
		endpoint = os.Getenv("AWS_ENDPOINT_URL")
	}
	if endpoint != "" {
		if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("endpoint %q is not an http:// or https:// URL", endpoint)
		}
	}
	// One retryer for the client and the getter: one retry quota.
	retryer := countingRetryer{retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = cfg.MaxAttempts
		o.MaxBackoff = 2 * time.Second
		o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(notRetriedTLS)}, o.Retryables...)
	}), retries}
	// Bounded everywhere: a dial, a TLS handshake and the wait for a
	// response each have their own limit under the call's deadline, so
	// a black-holed endpoint costs a retry, not the whole call.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.ResponseHeaderTimeout = 30 * time.Second
		tr.MaxIdleConnsPerHost = 64
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	})
	var do aws.HTTPClient = httpClient
	if cfg.transport != nil {
		do = &http.Client{Transport: cfg.transport}
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(do),
		config.WithRetryer(func() aws.Retryer { return retryer }),
		// Every object is checked against its digest on read; the
		// SDK's own checksums add nothing and some stores lack them.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--s3-ca: %w", err)
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = defaultRegion
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = endpoint != ""
	})
	if endpoint == "" {
		endpoint = "AWS S3 in " + awsCfg.Region
	}
	if cfg.IndexCache != "" {
		k := sha256.Sum256([]byte(endpoint + "\x00" + cfg.Bucket + "\x00" + cfg.Prefix))
		cfg.IndexCache = filepath.Join(cfg.IndexCache, hex.EncodeToString(k[:cacheDirBytes]))
	}
	s := &Store{cfg: cfg, client: client, endpoint: endpoint, retries: retries, creds: awsCfg.Credentials, packs: &packIndex{},
		getter: newGetter(ctx, client, cfg.Bucket, retryer)}
	if cfg.NoCheck {
		return s, nil
	}
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.lists.Add(1)
	_, err = client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(cfg.Bucket), Prefix: aws.String(s.key("")), MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return nil, s.wrap("list", "", err)
	}
	return s, nil
}

// URL names the store as s3://BUCKET/PREFIX.
func (s *Store) URL() string {
	if s.cfg.Prefix == "" {
		return "s3://" + s.cfg.Bucket
	}
	return "s3://" + s.cfg.Bucket + "/" + s.cfg.Prefix
}

// Stats returns the request counts so far.
func (s *Store) Stats() Stats {
	return Stats{Gets: s.gets.Load(), Puts: s.puts.Load(), Heads: s.heads.Load(), Lists: s.lists.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Retries: s.retries.Load(),
		Indexes: s.indexes.Load(), IndexesKept: s.indexesKept.Load()}
}

// countingRetryer counts the retries the SDK makes, for Stats: a retry
// is decided by asking for its delay.
type countingRetryer struct {
	aws.RetryerV2
	n *atomic.Int64
}

func (r countingRetryer) RetryDelay(attempt int, err error) (time.Duration, error) {
	r.n.Add(1)
	return r.RetryerV2.RetryDelay(attempt, err)
}

// key is the object key of rel under the prefix.
func (s *Store) key(rel string) string {
	if s.cfg.Prefix == "" {
		return rel
	}
	return s.cfg.Prefix + "/" + rel
}

const objectsDir = "objects/"

func (s *Store) objectKey(d object.Digest) string {
	return s.key(objectsDir + strings.TrimPrefix(d.String(), "sha256-"))
}

// callCtx bounds a call by Timeout unless ctx has a deadline already.
func (s *Store) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.Timeout)
}

// Get returns object d, loose or packed, verified: bytes that do not
// hash to d are an error wrapping object.ErrCorrupt, never returned,
// that names the key (and the range of a pack) they came from.
func (s *Store) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	if d.IsZero() {
		return nil, fmt.Errorf("get of the zero digest: %w", object.ErrNotFound)
	}
	b, where, err := s.fetch(ctx, d, false)
	if err != nil {
		return nil, err
	}
	if got := object.Sum(b); got != d {
		s.cfg.Log.Error("damaged object in the bucket", "store", s.URL(), "digest", d.String(), "bytes", len(b), "key", where)
		return nil, fmt.Errorf("object %s in bucket %s is damaged: its %d bytes in %s hash to %s: delete that key, then publish (or push) again what holds it: %w",
			d.Short(), s.cfg.Bucket, len(b), where, got.Short(), object.ErrCorrupt)
	}
	return b, nil
}

func (s *Store) getKey(ctx context.Context, key string) ([]byte, error) {
	return s.getKeyInto(ctx, key, false)
}

// getKeyInto is getKey, into a buffer of the pool (remote's GetManyLent
// and GetManyGiven) when pooled. A body of known length is read into a
// buffer of that length: read to its end in buffers that grow, a chunk
// would cost as much in copies, clearing and collection as the rest of
// its fetch.
func (s *Store) getKeyInto(ctx context.Context, key string, pooled bool) ([]byte, error) {
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.gets.Add(1)
	out, err := s.getObject(ctx, key, "")
	if err != nil {
		return nil, s.wrap("get", key, err)
	}
	defer out.body.Close()
	n := out.contentLength
	if n < 0 {
		b, err := io.ReadAll(io.LimitReader(out.body, maxObject+1))
		s.bytesIn.Add(int64(len(b)))
		if err != nil {
			return nil, s.wrap("get", key, err)
		}
		if len(b) > maxObject {
			return nil, fmt.Errorf("%s: longer than any object: %w", key, object.ErrCorrupt)
		}
		return b, nil
	}
	if n > maxObject {
		return nil, fmt.Errorf("%s: longer than any object (%d bytes): %w", key, n, object.ErrCorrupt)
	}
	// HTTP fails a body that ends before the length the answer gave, and
	// reads none past it: the read after the last byte only sees the end,
	// which lets the connection be used again.
	b := newBuf(int(n)+1, pooled)
	got, err := io.ReadFull(out.body, b[:n])
	if err == nil {
		var k int
		if k, err = out.body.Read(b[n:]); k > 0 {
			err = errors.New("body longer than its Content-Length")
		} else if err == io.EOF {
			err = nil
		}
		got += k
	}
	s.bytesIn.Add(int64(got))
	if err != nil {
		freeBuf(b, pooled)
		return nil, s.wrap("get", key, err)
	}
	return b[:n], nil
}

// newBuf returns n bytes of new memory, or of the process's buffer pool
// (remote's, which gRPC uses too) when pooled. A pool's buffer holds
// whatever it held: it must be filled before anything reads it.
func newBuf(n int, pooled bool) []byte {
	if !pooled {
		return make([]byte, n)
	}
	return *mem.DefaultBufferPool().Get(n)
}

// freeBuf gives b, from newBuf, back to the pool if it came from it.
func freeBuf(b []byte, pooled bool) {
	if pooled {
		b = b[:cap(b)]
		mem.DefaultBufferPool().Put(&b)
	}
}

// Put stores an encoded object under its digest, unless the bucket has
// it: the write is conditional (If-None-Match: *), so an object is never
// overwritten where the store honours that; where it does not, the same
// bytes are written again, which changes nothing a reader sees.
func (s *Store) Put(ctx context.Context, enc []byte) (object.Digest, error) {
	if _, err := object.Check(enc); err != nil {
		return object.Zero, fmt.Errorf("put: %w", err)
	}
	d := object.Sum(enc)
	if err := s.putKey(ctx, s.objectKey(d), enc); err != nil {
		return object.Zero, fmt.Errorf("object %s: %w", d.Short(), err)
	}
	return d, nil
}

// putKey writes b at key if nothing is there; an existing key is no
// error (errExists is returned only to putOnce's callers that ask).
func (s *Store) putKey(ctx context.Context, key string, b []byte) error {
	err := s.putOnce(ctx, key, b)
	if errors.Is(err, errExists) {
		return nil
	}
	return err
}

var errExists = errors.New("already exists")

func (s *Store) putOnce(ctx context.Context, key string, b []byte) error {
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.puts.Add(1)
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key),
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b))),
		IfNoneMatch: aws.String("*"),
	})
	if err != nil {
		if status(err) == http.StatusPreconditionFailed {
			return errExists
		}
		return s.wrap("put", key, err)
	}
	s.bytesOut.Add(int64(len(b)))
	return nil
}

// Has reports whether the bucket holds object d: in a pack its indexes
// name, or loose (one HEAD). Until the indexes have been loaded it asks
// for d loose first, and loads them only if d is not: a remount asking
// whether its version object, never packed, is still there makes one
// request, not the listings and index reads of a load.
func (s *Store) Has(ctx context.Context, d object.Digest) (bool, error) {
	if !s.packs.everLoaded.Load() {
		if ok, err := s.hasLoose(ctx, d); err != nil || ok {
			return ok, err
		}
		_, ok, err := s.locate(ctx, d, false)
		return ok, err
	}
	if _, ok, err := s.locate(ctx, d, false); err != nil || ok {
		return ok, err
	}
	return s.hasLoose(ctx, d)
}

// hasLoose asks for d's loose key with one HEAD.
func (s *Store) hasLoose(ctx context.Context, d object.Digest) (bool, error) {
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.heads.Add(1)
	key := s.objectKey(d)
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		err = s.wrap("head", key, err)
		if errors.Is(err, object.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("object %s: %w", d.Short(), err)
	}
	return true, nil
}

// listKeys calls fn with every key under rel (relative to the prefix),
// in the store's order (ascending), one page per call bounded by Timeout;
// fn returning false stops the listing.
func (s *Store) listKeys(ctx context.Context, rel string, pageSize int32, fn func(key string) bool) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.key(rel))}
	if pageSize > 0 {
		in.MaxKeys = aws.Int32(pageSize)
	}
	for {
		pctx, cancel := s.callCtx(ctx)
		s.lists.Add(1)
		out, err := s.client.ListObjectsV2(pctx, in)
		cancel()
		if err != nil {
			return s.wrap("list", s.key(rel), err)
		}
		for _, o := range out.Contents {
			if !fn(strings.TrimPrefix(aws.ToString(o.Key), s.key(rel))) {
				return nil
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// List calls fn with the digest of every object the bucket holds, loose
// or in a pack that is there (by name and index: what it lists is not
// read, nor verified). An object in two places is called twice.
func (s *Store) List(ctx context.Context, fn func(object.Digest)) error {
	return s.list(ctx, func(d object.Digest, _ bool) { fn(d) })
}

// list is List, saying of each object whether it is loose or packed.
func (s *Store) list(ctx context.Context, fn func(d object.Digest, loose bool)) error {
	if err := s.reloadPacks(ctx, false); err != nil {
		return err
	}
	s.packs.mu.Lock()
	s.packs.locs.each(func(d object.Digest) { fn(d, false) })
	s.packs.mu.Unlock()
	return s.listKeys(ctx, objectsDir, 0, func(name string) bool {
		if d, err := object.ParseDigest("sha256-" + name); err == nil {
			fn(d, true)
		}
		return true
	})
}

// opVerb says what op does, for a message.
func opVerb(op string) string {
	switch op {
	case "get", "head":
		return "read"
	case "put":
		return "write"
	}
	return op
}

// identity names the credentials in use, for a message: their access key
// ID (the SDK has them cached from the request that was denied).
func (s *Store) identity() string {
	if s.creds == nil {
		return "these credentials"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.creds.Retrieve(ctx)
	if err != nil || c.AccessKeyID == "" {
		return "these credentials"
	}
	return "AWS_ACCESS_KEY_ID " + c.AccessKeyID
}

// status is the HTTP status of a failed request, or 0.
func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// wrap turns an SDK error of op on key into one of the sentinels where
// it is one (a missing object is object.ErrNotFound), with a message that
// says what to check, and without the SDK's long chain of wrappers.
func (s *Store) wrap(op, key string, err error) error {
	where := s.URL()
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	switch {
	case code == "NoSuchKey" || (code == "NotFound" && op == "head") || (status(err) == http.StatusNotFound && code != "NoSuchBucket" && op != "list"):
		return fmt.Errorf("%s in %s: %w", key, where, object.ErrNotFound)
	case code == "NoSuchBucket" || (status(err) == http.StatusNotFound && op == "list"):
		return fmt.Errorf("%s: bucket %q does not exist at %s: check the bucket's name in the URL and the endpoint (--s3-endpoint, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), or create the bucket: %w",
			where, s.cfg.Bucket, s.endpoint, ErrNoBucket)
	case code == "RequestTimeTooSkewed" || code == "RequestExpired":
		// Requests are signed at the time the store's answers give,
		// so this is a store whose answers carry no usable Date.
		return fmt.Errorf("%s: %s refused the request's time (%s): this machine's clock and the store's differ by more than the store allows (15 minutes for S3): set the clock (NTP): %w",
			where, s.endpoint, code, ErrCredentials)
	case code == "AccessDenied":
		// The keys were taken; the identity may not do this.
		return fmt.Errorf("%s: %s denied %s: %s may not %s there (AccessDenied): grant that identity %s access to the bucket, or use credentials that have it: %w",
			where, s.endpoint, op, s.identity(), opVerb(op), opVerb(op), ErrCredentials)
	case code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" ||
		code == "InvalidToken" || code == "ExpiredToken" || code == "InvalidSecurity" ||
		status(err) == http.StatusForbidden || status(err) == http.StatusUnauthorized:
		if code == "" {
			code = http.StatusText(status(err))
		}
		return fmt.Errorf("%s: %s refused the credentials (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE: %w",
			where, s.endpoint, code, ErrCredentials)
	}
	if p := s.certProblem(err); p != "" {
		return fmt.Errorf("%s: %w at %s: %s", where, ErrTLS, s.endpoint, p)
	}
	if s.plainToTLS(err) {
		return fmt.Errorf("%s: %w at %s: it speaks TLS and this client does not: use %s (and --s3-ca if a CA this machine does not trust signed its certificate)",
			where, ErrTLS, s.endpoint, s.withScheme("https"))
	}
	var ne net.Error
	var oe *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &oe), errors.As(err, &dnsErr):
		var cause error = oe
		if dnsErr != nil {
			cause = dnsErr
		}
		return fmt.Errorf("%s: cannot reach %s: %v: check --s3-endpoint (or AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL) and that the store is up: %w",
			where, s.endpoint, cause, ErrUnreachable)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%s: %s %s: no answer from %s in time: %w", where, op, key, s.endpoint, errors.Join(ErrUnreachable, context.DeadlineExceeded))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %s %s: %w", where, op, key, err)
	}
	if code != "" {
		return fmt.Errorf("%s: %s %s: %s: %s", where, op, key, code, ae.ErrorMessage())
	}
	return fmt.Errorf("%s: %s %s: %w", where, op, key, err)
}
