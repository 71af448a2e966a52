// Command weedtool is scripts/seaweedfs: it builds the pinned SeaweedFS
// (package remote/s3store/s3test, the same build and cache the tests use)
// and runs it for people.
//
//	weedtool build        build weed into the cache if it is not there; print its path
//	weedtool serve DIR    start weed with its S3 gateway on loopback, data in DIR;
//	                      print the AWS environment that reaches it, with a bucket
//	                      "cowfs" made; run until SIGINT or SIGTERM
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "seaweedfs:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: seaweedfs build | serve DIR")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bin, err := s3test.Build(ctx, os.Stderr)
	if err != nil {
		return err
	}
	switch {
	case args[0] == "build" && len(args) == 1:
		fmt.Println(bin)
		return nil
	case args[0] == "serve" && len(args) == 2:
		return serve(bin, args[1])
	}
	return fmt.Errorf("usage: seaweedfs build | serve DIR")
}

func serve(bin, dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := s3test.Start(ctx, bin, dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	_, err = srv.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("cowfs")})
	if err != nil {
		return fmt.Errorf("create bucket cowfs: %w", err)
	}
	fmt.Printf("export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s AWS_ENDPOINT_URL_S3=%s\n",
		s3test.AccessKey, s3test.SecretKey, s3test.Region, srv.Endpoint)
	fmt.Println("# bucket: s3://cowfs; log:", dir+"/weed.log")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}
