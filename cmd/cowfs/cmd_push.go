package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
)

// pushJSON is the line of cowfs push --json.
type pushJSON struct {
	Name        string `json:"name"`
	Master      string `json:"master"`
	ObjectsSent int    `json:"objects_sent"`
}

func newPushCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var asJSON bool
	r := &remoteFlags{}
	s3f := &s3Flags{}
	cmd := &cobra.Command{
		Use:   "push NAME [--remote ADDR|s3://BUCKET/PREFIX]",
		Short: "Send a snapshot to a master or a bucket, or send it again",
		Long: `Send snapshot NAME of this state directory to a master, with every object
the master lacks, so that "cowfs restore NAME --remote" works on any worker.
A push that failed (cowfs snapshot --push, or this command) can be repeated:
what the master already has is not sent again, and the same snapshot under
the same name is not an error.

Without --remote, NAME goes to the master the mount it was taken of was
mounted from (mount --remote): through that mount while it runs, as it
holds the master's token; once it is unmounted, straight from the state
directory, with --token-file and --tls-ca given here.

With --remote s3://BUCKET/PREFIX (or a mount of a bucket), NAME goes to the
bucket as a checkpoint: the objects it lacks, then the key
PREFIX/checkpoints/NAME, last; "cowfs restore NAME MNT --remote
s3://BUCKET/PREFIX" restores it on any machine. A name the bucket holds for
another snapshot is refused.`,
		Example: `  cowfs snapshot /root/crawlab_workspace/spider1 ckpt --push   # failed: master down
  cowfs push ckpt                                               # later, the same master
  cowfs push ckpt --remote master2:7420 --token-file /etc/cowfs/token
  cowfs push ckpt --remote s3://cowfs/spiders/spider1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, d, err := openSnapshots(g.state)
			if err != nil {
				return err
			}
			snap, err := d.Get(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			sent := 0
			if r.addr == "" {
				if r.addr, err = cowfs.RecordedMaster(g.state, snap.Source); err != nil {
					return err
				}
				if r.addr == "" {
					return usagef("snapshot %s was not taken of a mount --remote: give the master with --remote ADDR", snap.Name)
				}
			}
			if !cmd.Flags().Changed("remote") && snap.Source != "" {
				// The mount it was taken of, if it still runs, has
				// the master's token.
				pushed, err := cowfs.ControlOf(g.state, snap.Source).Push(ctx, snap.Name)
				err = fromMount(err)
				switch {
				case err == nil:
					return printPush(cmd, asJSON, pushJSON{Name: snap.Name, Master: r.addr, ObjectsSent: pushed})
				case !errors.Is(err, cowfs.ErrNoWorkspace):
					return fmt.Errorf("push %s through its mount %s: %w", snap.Name, snap.Source, err)
				}
			}
			if strings.HasPrefix(r.addr, "s3://") {
				if sent, err = pushBucket(ctx, s3f, r.addr, store, snap); err != nil {
					return err
				}
				return printPush(cmd, asJSON, pushJSON{Name: snap.Name, Master: r.addr, ObjectsSent: sent})
			}
			if err := r.check(); err != nil {
				return usageError{err}
			}
			var token string
			if r.tokenFile != "" {
				b, err := os.ReadFile(r.tokenFile)
				if err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
				token = strings.TrimSpace(string(b))
			}
			client, err := remote.Dial(remote.ClientConfig{
				Addr: r.addr, Token: token, CAFile: r.tlsCA,
				CallTimeout: min(10*time.Second, r.ioTimeout), Timeout: r.ioTimeout,
			})
			if err != nil {
				return err
			}
			defer client.Close()
			if sent, err = client.Push(ctx, store, snap); err != nil {
				return fmt.Errorf("master %s: %w", r.addr, err)
			}
			return printPush(cmd, asJSON, pushJSON{Name: snap.Name, Master: r.addr, ObjectsSent: sent})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&r.addr, "remote", "", "the master at ADDR (host:port), or s3://BUCKET/PREFIX; default: the master or bucket of the mount the snapshot was taken of")
	fl.StringVar(&r.tokenFile, "token-file", "", "file holding the master's bearer token")
	fl.StringVar(&r.tlsCA, "tls-ca", "", "use TLS, checking the master's certificate against this CA (PEM)")
	fl.DurationVar(&r.ioTimeout, "io-timeout", 20*time.Second, "give up on a master that does not answer in this time")
	fl.DurationVar(&timeout, "timeout", time.Hour, "give up on the whole push after this long")
	fl.BoolVar(&asJSON, "json", false, jsonFlagHelp)
	s3f.register(cmd)
	return cmd
}

// pushBucket sends snap from store to the bucket url names, as a
// checkpoint.
func pushBucket(ctx context.Context, f *s3Flags, url string, store object.GetPutter, snap refs.Snapshot) (int, error) {
	dst, err := f.openRemote(ctx, url)
	if err != nil {
		return 0, err
	}
	return dst.Push(ctx, store, snap)
}

func printPush(cmd *cobra.Command, asJSON bool, p pushJSON) error {
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), p)
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "pushed %s to %s: %d objects sent\n", p.Name, p.Master, p.ObjectsSent)
	return err
}
