package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/remote/s3store"
)

// s3Flags are the flags of a command that reaches a bucket.
type s3Flags struct {
	endpoint, ca string
	timeout      time.Duration
}

func (f *s3Flags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.endpoint, "s3-endpoint", "", "the object store's URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS S3)")
	cmd.Flags().StringVar(&f.ca, "s3-ca", "", "trust this CA (PEM) for the object store's TLS")
	cmd.Flags().DurationVar(&f.timeout, "s3-timeout", s3store.DefaultTimeout, "a request to the object store, its retries included, fails after this")
}

// open opens the bucket prefix url names; a url that names none is a
// usage error.
func (f *s3Flags) open(ctx context.Context, url string) (*s3store.Store, error) {
	bucket, prefix, err := s3store.ParseURL(url)
	if err != nil {
		return nil, usageError{err}
	}
	if f.timeout <= 0 {
		return nil, fmt.Errorf("--s3-timeout must be positive")
	}
	return s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: prefix, Endpoint: f.endpoint, CAFile: f.ca, Timeout: f.timeout})
}

// openRemote is open of the URL --remote gave, which a usage error names.
func (f *s3Flags) openRemote(ctx context.Context, url string) (*s3store.Store, error) {
	st, err := f.open(ctx, url)
	if u, ok := err.(usageError); ok {
		return nil, usageError{fmt.Errorf("--remote: %w", u.err)}
	}
	return st, err
}

func newPublishCmd(g *globals) *cobra.Command {
	f := &s3Flags{}
	var concurrency int
	cmd := &cobra.Command{
		Use:   "publish DIR s3://BUCKET/PREFIX",
		Short: "Publish DIR as the newest version in an S3-compatible bucket",
		Long: `Publish scans DIR into content-addressed objects (kept in the state
directory's store as well), uploads those the bucket lacks, and then makes
the new version visible with one last write: a reader sees the old version
or the whole new one, never part of it. Publishing again after a change
uploads only the changed chunks and the directories above them.

Credentials, region and endpoint come from the AWS environment, as for the
AWS tools: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE,
AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (or --s3-endpoint).

On a terminal it shows progress; otherwise it prints one JSON object a line
on stdout, the last one the result.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if st, err := os.Stat(dir); err != nil {
				return err
			} else if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			if concurrency < 1 {
				return usagef("--concurrency must be at least 1")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			dst, err := f.open(ctx, args[1])
			if err != nil {
				return err
			}
			local, err := object.OpenDirStore(statedir.ObjectsDir(g.state))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			tty := isTerminal(cmd.ErrOrStderr())
			opts := s3store.PublishOptions{Concurrency: concurrency, Progress: progressPrinter(out, cmd.ErrOrStderr(), tty)}
			res, err := s3store.Publish(ctx, dst, local, dir, opts)
			if err != nil {
				return err
			}
			if tty {
				fmt.Fprintf(out, "published %s to %s: %d files, %s; uploaded %d of %d objects, %s, in %v\n",
					res.Version, dst.URL(), res.Files, humanize.IBytes(uint64(res.Bytes)), res.Uploaded, res.Objects,
					humanize.IBytes(uint64(res.UploadedBytes)), res.Took.Round(time.Millisecond))
				return nil
			}
			return json.NewEncoder(out).Encode(struct {
				Result string `json:"result"`
				URL    string `json:"url"`
				s3store.PublishResult
			}{"published", dst.URL(), res})
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&concurrency, "concurrency", 16, "uploads at once")
	return cmd
}

// progressPrinter shows progress on a terminal (one line, redrawn, on
// errw), or writes it as JSON lines to out, at most a few a second.
func progressPrinter(out, errw io.Writer, tty bool) func(s3store.PublishProgress) {
	var last time.Time
	var lastPhase string
	return func(p s3store.PublishProgress) {
		if p.Phase == lastPhase && p.Phase != "done" && time.Since(last) < 250*time.Millisecond && p.Uploaded != p.Upload {
			return
		}
		last, lastPhase = time.Now(), p.Phase
		if !tty {
			json.NewEncoder(out).Encode(p)
			return
		}
		switch p.Phase {
		case "uploading", "done":
			fmt.Fprintf(errw, "\ruploading: %d of %d objects the bucket lacks (of %d), %s   ", p.Uploaded, p.Upload, p.Objects, humanize.IBytes(uint64(p.UploadedBytes)))
			if p.Phase == "done" {
				fmt.Fprintln(errw)
			}
		default:
			fmt.Fprintf(errw, "\r%s...   ", p.Phase)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
