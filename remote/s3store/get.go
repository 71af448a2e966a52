package s3store

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	"github.com/aws/smithy-go/encoding/httpbinding"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// answer is what a GET of a key got: its body, which the caller closes,
// the body's length (-1 where the answer gave none), and the range the
// answer holds ("" for a whole object).
type answer struct {
	body          io.ReadCloser
	contentLength int64
	contentRange  string
}

// getObject GETs key, the bytes rng names ("bytes=A-B") or all of it.
// An error is of the kinds the SDK's are (a *smithyhttp.ResponseError
// holding a smithy.APIError, a *smithyhttp.RequestSendError), for wrap
// and status to read either way.
func (s *Store) getObject(ctx context.Context, key, rng string) (answer, error) {
	if s.getter != nil {
		return s.getter.get(ctx, key, rng)
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}
	if rng != "" {
		in.Range = aws.String(rng)
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return answer{}, err
	}
	n := int64(-1)
	if out.ContentLength != nil {
		n = *out.ContentLength
	}
	return answer{body: out.Body, contentLength: n, contentRange: aws.ToString(out.ContentRange)}, nil
}

// getter GETs a bucket's keys with one signed HTTP request each, made
// here rather than by the SDK's operation: the SDK builds, for every
// call, a stack of some thirty middlewares (endpoint rules, auth scheme
// resolution, checksum and user-agent bookkeeping) that cost a small
// object's GET more CPU than its transfer (decision 0084). Everything
// that decides what goes on the wire is still the SDK's, resolved once:
// the bucket's URL by its endpoint rules, the signature by its SigV4
// signer, the credentials by its chain, and retries by the Store's
// retryer, the one its client uses.
type getter struct {
	client  aws.HTTPClient
	bucket  url.URL // the bucket's URL, as the endpoint rules made it
	creds   aws.CredentialsProvider
	signer  *v4.Signer
	service string // the signing name and region the endpoint rules gave
	region  string
	retryer aws.RetryerV2
	// skew is the server's clock less this machine's, in ns, as the
	// last answer's Date header said: requests are signed at now plus
	// skew, so that a worker whose clock is off still signs in the
	// window a store accepts (15 minutes for S3), as the SDK does.
	skew atomic.Int64
}

// emptySHA256 is the SHA-256 of an empty payload, a GET's.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// sigV4 is the auth scheme the getter signs with, as endpoint rules name
// it; a bucket whose rules ask for another ("sigv4-s3express" for S3
// Express's sessions, "sigv4a" for multi-region access points) is read
// through the SDK.
const sigV4 = "sigv4"

// newGetter resolves the bucket's URL and signing once, as the client's
// GetObject would for any key, and sends through the client's own HTTP
// client (which holds --s3-ca's pool): nil where the rules ask for what
// only the SDK's operation does (another auth scheme, headers of their
// own), and the Store then GETs through the SDK.
func newGetter(ctx context.Context, client *s3.Client, bucket string, retryer aws.RetryerV2) *getter {
	o := client.Options()
	if o.EndpointResolverV2 == nil || o.Credentials == nil || o.HTTPClient == nil || strings.Contains(o.Region, "fips") {
		return nil
	}
	ep, err := o.EndpointResolverV2.ResolveEndpoint(ctx, s3.EndpointParameters{
		Bucket:                         aws.String(bucket),
		Region:                         aws.String(o.Region),
		UseFIPS:                        aws.Bool(o.EndpointOptions.UseFIPSEndpoint == aws.FIPSEndpointStateEnabled),
		UseDualStack:                   aws.Bool(o.EndpointOptions.UseDualStackEndpoint == aws.DualStackEndpointStateEnabled),
		Endpoint:                       o.BaseEndpoint,
		ForcePathStyle:                 aws.Bool(o.UsePathStyle),
		Accelerate:                     aws.Bool(o.UseAccelerate),
		DisableMultiRegionAccessPoints: aws.Bool(o.DisableMultiRegionAccessPoints),
		UseArnRegion:                   aws.Bool(o.UseARNRegion),
		DisableS3ExpressSessionAuth:    o.DisableS3ExpressSessionAuth,
	})
	if err != nil || len(ep.Headers) > 0 || ep.URI.RawQuery != "" {
		return nil
	}
	g := &getter{client: o.HTTPClient, bucket: ep.URI, creds: o.Credentials, service: "s3", region: o.Region, retryer: retryer,
		// S3 signs the path as sent, not escaped again.
		signer: v4.NewSigner(func(so *v4.SignerOptions) { so.DisableURIPathEscaping = true })}
	if auth, _ := smithyauth.GetAuthOptions(&ep.Properties); len(auth) > 0 {
		if auth[0].SchemeID != sigV4 {
			return nil
		}
		if n, ok := smithyhttp.GetSigV4SigningName(&auth[0].SignerProperties); ok {
			g.service = n
		}
		if r, ok := smithyhttp.GetSigV4SigningRegion(&auth[0].SignerProperties); ok {
			g.region = r
		}
	}
	return g
}

// get GETs key, retrying as the SDK's retry middleware does with the
// same retryer: what it deems retryable, up to its attempts, after its
// delays (or an X-Amz-Retry-After's), within its retry quota; and an
// answer refusing a signature its clock skew explains, once the skew is
// taken from the answer's Date.
func (g *getter) get(ctx context.Context, key, rng string) (answer, error) {
	release, err := g.retryer.GetAttemptToken(ctx)
	if err != nil {
		return answer{}, err
	}
	for attempt := 1; ; attempt++ {
		a, err := g.once(ctx, key, rng)
		release(err)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil || attempt >= g.retryer.MaxAttempts() || !g.retryer.IsErrorRetryable(err) {
			return answer{}, err
		}
		delay, derr := g.retryer.RetryDelay(attempt, err)
		if derr != nil {
			return answer{}, err
		}
		delay = retryAfter(delay, err)
		if release, derr = g.retryer.GetRetryToken(ctx, err); derr != nil {
			return answer{}, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return answer{}, fmt.Errorf("%w; the last attempt: %w", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// retryAfter is the delay before another attempt: a store's
// X-Amz-Retry-After (ms) where it gives one, within backoff and backoff
// plus 5 s, as the SDK takes it.
func retryAfter(backoff time.Duration, err error) time.Duration {
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil || re.Response.Response == nil {
		return backoff
	}
	ms, perr := strconv.ParseInt(re.Response.Header.Get("X-Amz-Retry-After"), 10, 64)
	if perr != nil || ms < 0 {
		return backoff
	}
	return min(max(time.Duration(ms)*time.Millisecond, backoff), backoff+5*time.Second)
}

// Clock skew, as the SDK corrects it: an answer's Date is trusted unless
// a cache served it (Age) or it took longer than a signature lives; a
// refusal of these codes is retried when the skew it shows differs from
// the one signed with by more than skewThreshold.
const (
	skewThreshold  = 4 * time.Minute
	maxTrustedTrip = 15 * time.Minute
)

var skewCodes = map[string]bool{
	"InvalidSignatureException": true, "SignatureDoesNotMatch": true, "AuthFailure": true,
	"RequestTimeTooSkewed": true, "AccessDeniedException": true,
}

// skewError is a refusal clock skew explains: the retryer retries it.
type skewError struct{ err error }

func (e *skewError) Error() string        { return "probable clock skew: " + e.err.Error() }
func (e *skewError) Unwrap() error        { return e.err }
func (e *skewError) RetryableError() bool { return true }

// once makes one attempt: an answer of 200 or 206 is returned with its
// body open; any other is read, closed and returned as the SDK's error
// of that status and the S3 error code its body names.
func (g *getter) once(ctx context.Context, key, rng string) (answer, error) {
	u := g.bucket
	u.Path = smithyhttp.JoinPath(g.bucket.Path, key)
	u.RawPath = smithyhttp.JoinPath(g.bucket.EscapedPath(), httpbinding.EscapePath(key, false))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return answer{}, fmt.Errorf("GET %s: %w", key, err)
	}
	// The store's bytes as stored: net/http would otherwise ask for gzip
	// and undo it, which a ranged GET of a pack cannot use.
	req.Header.Set("Accept-Encoding", "identity")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	creds, err := g.creds.Retrieve(ctx)
	if err != nil {
		return answer{}, fmt.Errorf("credentials: %w", err)
	}
	req.Header.Set("X-Amz-Content-Sha256", emptySHA256)
	signedSkew := time.Duration(g.skew.Load())
	sent := time.Now()
	if err := g.signer.SignHTTP(ctx, creds, req, emptySHA256, g.service, g.region, sent.Add(signedSkew)); err != nil {
		return answer{}, fmt.Errorf("sign GET %s: %w", key, err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return answer{}, &smithyhttp.RequestSendError{Err: err}
	}
	skew, skewed := g.noteSkew(resp, sent)
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
		return answer{body: resp.Body, contentLength: resp.ContentLength, contentRange: resp.Header.Get("Content-Range")}, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	err = responseError(resp, body)
	var ae smithy.APIError
	if skewed && errors.As(err, &ae) && skewCodes[ae.ErrorCode()] && (skew-signedSkew).Abs() > skewThreshold {
		return answer{}, &skewError{err}
	}
	return answer{}, err
}

// noteSkew takes the clock skew an answer to a request sent at sent
// shows, if it can be trusted, as the one to sign with from now on.
func (g *getter) noteSkew(resp *http.Response, sent time.Time) (time.Duration, bool) {
	got := time.Now()
	date := resp.Header.Get("Date")
	if date == "" || resp.Header.Get("Age") != "" || got.Sub(sent) > maxTrustedTrip {
		return 0, false
	}
	server, err := http.ParseTime(date)
	if err != nil {
		return 0, false
	}
	skew := server.Sub(got)
	g.skew.Store(int64(skew))
	return skew, true
}

// responseError is the error the SDK makes of a failed answer: its
// status, and the code and message of the S3 error document in its body
// (a status's name where there is none).
func responseError(resp *http.Response, body []byte) error {
	var doc struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil || doc.Code == "" {
		doc.Code = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
		if doc.Code == "" {
			doc.Code = fmt.Sprintf("HTTP%d", resp.StatusCode)
		}
	}
	fault := smithy.FaultClient
	if resp.StatusCode >= 500 {
		fault = smithy.FaultServer
	}
	return &smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: resp},
		Err: &smithy.GenericAPIError{Code: doc.Code, Message: doc.Message, Fault: fault}}
}
