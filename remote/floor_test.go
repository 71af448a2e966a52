package remote

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"testing"

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
					req := &pb.GetManyRequest{Digests: make([][]byte, n)}
					st, err := ex.GetMany(context.Background(), req)
					if err != nil {
						b.Fatal(err)
					}
					for {
						if _, err := st.Recv(); err == io.EOF {
							break
						} else if err != nil {
							b.Fatal(err)
						}
					}
					done += n
				}
			}
		})
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
