package remote

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cowfs/cowfs/cow/object"
)

// sendCodec is gRPC's proto codec on the master, but for the pieces a
// GetMany call sends (outPiece): their data go to the transport as the
// buffer the object was read into, framed by a few bytes of message
// around it, where proto copied every piece into a message of its own
// first. Any other message goes through the proto codec.
type sendCodec struct{}

// Name is the proto codec's: clients decode what it sends as ever.
func (sendCodec) Name() string { return "proto" }

func (sendCodec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*outPiece); ok {
		return p.marshal(), nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (sendCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// outPiece is one pb.GetManyResponse whose data a mem.Buffer holds. The
// reference in data is the message's: marshal hands it to gRPC, which
// frees it once the transport has written it, after SendMsg returns, so
// the memory must not be written again until then; a pooled buffer goes
// back to its pool only when its last piece is written.
type outPiece struct {
	index  int32
	size   int64
	data   mem.Buffer
	digest []byte
}

// marshal lays the piece out as proto would (pb/remote.proto: index 1,
// size 2, data 3, digest 5; fields in their numbers' order, zero ones
// left out), the data as its own buffer.
func (p *outPiece) marshal() mem.BufferSlice {
	n := p.data.Len()
	hdr := make([]byte, 0, 3*varintFieldMax)
	if p.index != 0 {
		hdr = protowire.AppendTag(hdr, 1, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(p.index))
	}
	if p.size != 0 {
		hdr = protowire.AppendTag(hdr, 2, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(p.size))
	}
	out := mem.BufferSlice{}
	if n > 0 {
		hdr = protowire.AppendTag(hdr, 3, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(n))
		out = append(out, mem.SliceBuffer(hdr), p.data)
	} else {
		p.data.Free()
		out = append(out, mem.SliceBuffer(hdr))
	}
	if len(p.digest) > 0 {
		tr := protowire.AppendTag(nil, 5, protowire.BytesType)
		tr = protowire.AppendBytes(tr, p.digest)
		out = append(out, mem.SliceBuffer(tr))
	}
	p.data = nil
	return out
}

// String keeps gRPC's tracing, should it print a piece, off its data,
// which may be freed by then.
func (p *outPiece) String() string {
	return fmt.Sprintf("GetMany piece of the call's object %d, of %d bytes", p.index, p.size)
}

// varintFieldMax is the most bytes a varint field of a small number
// takes: its tag and its value.
const varintFieldMax = 1 + 10

// readSend reads object d for sending, into a buffer of its size from
// gRPC's pool (cowfs's: package bufpool), and returns it as a buffer with
// one reference, the caller's, and the bytes it holds (valid until that
// reference and the pieces' are freed).
func (s *Server) readSend(rd object.Reads, d object.Digest) (mem.Buffer, []byte, error) {
	pool := mem.DefaultBufferPool()
	var bp *[]byte
	b, err := rd.ReadUnverifiedWith(d, func(n int) []byte {
		if bp != nil {
			pool.Put(bp) // a read that failed: nothing of it is used
		}
		bp = pool.Get(n)
		return *bp
	})
	if err != nil {
		if bp != nil {
			pool.Put(bp)
		}
		return nil, nil, err
	}
	*bp = b
	return mem.NewBuffer(bp, pool), b, nil
}
