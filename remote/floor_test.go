package remote

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cowfs/cowfs/remote/pb"
)

// The floors beside a cold read (scripts/bench-coldread): what the wire
// and the hash alone cost for BENCH_FLOOR_MIB (default 64) of 1 MiB
// chunks, with nothing of cowfs's store, cache or checks around them.

func floorMiB() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_FLOOR_MIB")); err == nil && n > 0 {
		return n
	}
	return 64
}

// floorServer answers GetMany from memory with one encoded chunk per
// digest asked, in the master's pieces: the stream with no store behind.
type floorServer struct {
	pb.UnimplementedExportServer
	blob []byte
}

func (s *floorServer) GetMany(req *pb.GetManyRequest, stream pb.Export_GetManyServer) error {
	for i := range req.GetDigests() {
		for off := 0; off < len(s.blob); off += getPiece {
			end := min(off+getPiece, len(s.blob))
			if err := stream.Send(&pb.GetManyResponse{Index: int32(i), Size: int64(len(s.blob)), Data: s.blob[off:end]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// BenchmarkStreamFloor streams the chunks over gRPC on loopback, in
// GetMany calls of batch digests (4: a sequential reader's read-ahead;
// 1024: one call), the client receiving and dropping each piece.
func BenchmarkStreamFloor(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterExportServer(srv, &floorServer{blob: append([]byte{'b', 1}, make([]byte, 1<<20)...)})
	go srv.Serve(ln)
	defer srv.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	ex := pb.NewExportClient(cc)
	chunks := floorMiB()
	for _, batch := range []int{4, maxMany} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			b.SetBytes(int64(chunks) << 20)
			for b.Loop() {
				for done := 0; done < chunks; {
					n := min(batch, chunks-done)
					getMany(b, ex, n)
					done += n
				}
			}
		})
	}
}

// getMany makes one GetMany call for n objects and receives all of it,
// within 10 s.
func getMany(b *testing.B, ex pb.ExportClient, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ex.GetMany(ctx, &pb.GetManyRequest{Digests: make([][]byte, n)})
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := st.Recv(); err == io.EOF {
			return
		} else if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256 hashes the chunks, one call each, as a worker verifies
// what it fetched.
func BenchmarkSHA256(b *testing.B) {
	blob := append([]byte{'b', 1}, make([]byte, 1<<20)...)
	chunks := floorMiB()
	b.SetBytes(int64(chunks) << 20)
	for b.Loop() {
		for range chunks {
			sha256.Sum256(blob)
		}
	}
}

// BenchmarkRoundTripFloor is one GetMany call for one object of each
// size, answered from memory: the least a cold open of a small file can
// cost, one round trip over gRPC on loopback with no store on either
// side. "process" has the server in a process of its own, as a master
// is; "inproc" shares the client's Go runtime, which leaves out the
// wakeups of a second process.
func BenchmarkRoundTripFloor(b *testing.B) {
	for _, where := range []string{"inproc", "process"} {
		for _, size := range []int{64, 100 << 10} {
			b.Run(fmt.Sprintf("%s/%dB", where, size), func(b *testing.B) {
				var addr string
				if where == "inproc" {
					addr = serveFloor(b, size)
				} else {
					addr = serveFloorProcess(b, size)
				}
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					b.Fatal(err)
				}
				defer cc.Close()
				ex := pb.NewExportClient(cc)
				for b.Loop() {
					getMany(b, ex, 1)
				}
			})
		}
	}
}

// serveFloor serves the floor's objects of size bytes in this process
// until the benchmark ends, and returns the address.
func serveFloor(b *testing.B, size int) string {
	srv, addr, err := startFloor(size)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Stop)
	return addr
}

// startFloor serves objects of size bytes from memory on a loopback port.
func startFloor(size int) (*grpc.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	srv := grpc.NewServer()
	pb.RegisterExportServer(srv, &floorServer{blob: append([]byte{'b', 1}, make([]byte, size)...)})
	go srv.Serve(ln)
	return srv, ln.Addr().String(), nil
}

// serveFloorProcess runs this test binary again as the floor's server
// (TestMain), until the benchmark ends, and returns its address.
func serveFloorProcess(b *testing.B, size int) string {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("COWFS_FLOOR_SERVE=%d", size))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the server's cue to stop
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "floor-server "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(20 * time.Second):
		b.Fatal("the floor's server process did not start within 20 s")
		return ""
	}
}

// TestMain runs the tests, or, with COWFS_FLOOR_SERVE set to an object
// size, serves BenchmarkRoundTripFloor's objects from this process until
// stdin closes.
func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv("COWFS_FLOOR_SERVE"); ok {
		size, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "COWFS_FLOOR_SERVE=%q: not an object size\n", v)
			os.Exit(2)
		}
		srv, addr, err := startFloor(size)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("floor-server %s\n", addr)
		io.Copy(io.Discard, os.Stdin)
		srv.Stop()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
