package remote

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/cowfs/cowfs/remote/pb"
)

// A piece the send codec frames is the bytes proto writes for the same
// message, and decodes as it.
func TestOutPieceWire(t *testing.T) {
	digest := bytes.Repeat([]byte{0xab}, 32)
	for _, m := range []*pb.GetManyResponse{
		{Index: 3, Size: 10, Data: []byte("0123456789")},
		{Index: 0, Size: 1 << 20, Data: bytes.Repeat([]byte("x"), 4096), Digest: digest},
		{Index: 1 << 20, Size: 5, Data: []byte("12345"), Digest: digest},
		{Index: 2, Size: 7},
		{},
	} {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		p := &outPiece{index: m.Index, size: m.Size, data: mem.SliceBuffer(m.Data), digest: m.Digest}
		out := (sendCodec{}).marshalOK(t, p)
		got := out.Materialize()
		out.Free()
		if !bytes.Equal(got, want) {
			t.Errorf("%v: framed as %x; proto writes %x", m, got, want)
		}
		var back pb.GetManyResponse
		if err := proto.Unmarshal(got, &back); err != nil || !proto.Equal(&back, m) {
			t.Errorf("%v: decodes as %v, %v", m, &back, err)
		}
	}
}

func (c sendCodec) marshalOK(t *testing.T, v any) mem.BufferSlice {
	t.Helper()
	out, err := c.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// countPool counts the buffers given back to it.
type countPool struct{ puts int }

func (p *countPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countPool) Put(*[]byte)       { p.puts++ }

// An object's buffer goes back to its pool once, when the sender's
// reference and every piece's (freed by gRPC once written) are gone, and
// not before.
func TestOutPieceGivesBufferBackOnce(t *testing.T) {
	pool := &countPool{}
	data := bytes.Repeat([]byte("y"), 3*getPiece+5)
	b := mem.NewBuffer(&data, pool)
	var sent []mem.BufferSlice
	for off := 0; off < len(data); off += getPiece {
		p := &outPiece{index: 1, size: int64(len(data)), data: b.Slice(off, min(off+getPiece, len(data)))}
		sent = append(sent, (sendCodec{}).marshalOK(t, p))
	}
	b.Free() // the sender is done with the object
	for i, s := range sent {
		if pool.puts != 0 {
			t.Fatalf("buffer given back with %d of %d pieces not yet written", len(sent)-i, len(sent))
		}
		s.Free() // written
	}
	if pool.puts != 1 {
		t.Fatalf("buffer given back %d times; want once", pool.puts)
	}
}
