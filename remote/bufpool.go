package remote

import (
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"

	"github.com/cowfs/cowfs/remote/internal/bufpool"
)

// gRPC marshals and reads messages into buffers from one process-wide
// pool, which it clears on every hand-out; cowfs's pool does not (package
// bufpool says why nothing reads what a buffer held before). gRPC allows
// the default pool to be set only while the program starts.
func init() { experimental.SetDefaultBufferPool(new(bufpool.Pool)) }

// giveBack returns b, which came from the pool (Client.GetManyGiven), to
// it; nothing reads or writes b after.
func giveBack(b []byte) {
	b = b[:cap(b)]
	mem.DefaultBufferPool().Put(&b)
}
