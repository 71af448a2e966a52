package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// pieceCodec is gRPC's proto codec, but for the pieces a GetMany call
// receives: a piece's data goes from gRPC's receive buffers straight into
// the object it belongs to. Through proto, each byte was copied three
// times more (put in one buffer, unmarshalled, appended to its object):
// a quarter of a worker's CPU on a cold read. Requests, and any message
// but a *piece, go through the proto codec.
type pieceCodec struct{}

// Name is the proto codec's: the master decodes the request as ever.
func (pieceCodec) Name() string { return "proto" }

func (pieceCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (pieceCodec) Unmarshal(data mem.BufferSlice, v any) error {
	p, ok := v.(*piece)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	return p.decode(data)
}

// piece is one pb.GetManyResponse as pieceCodec decodes it. Its data go
// where into says, once the piece's size is known: proto writes fields in
// their numbers' order and leaves out an index of 0, so an index not seen
// before the data is 0, and one that comes after data placed is refused.
// Where into returns nil (or the data come first), into data, a slice of
// their own.
type piece struct {
	index   int32
	size    int64
	missing bool
	digest  []byte // set on the first piece of a followed object
	data    []byte
	placed  bool // the data went where into said
	into    func(p *piece, n int) []byte
}

var errPiece = errors.New("GetMany: malformed piece")

// decode reads the fields of a GetManyResponse (pb/remote.proto: index 1,
// size 2, data 3, missing 4, digest 5), skipping any other, as proto
// would.
func (p *piece) decode(data mem.BufferSlice) error {
	into := p.into
	*p = piece{into: into}
	r := data.Reader()
	defer r.Close()
	sawSize := false
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("%w: %v", errPiece, err)
		}
		num, typ := tag>>3, tag&7
		switch {
		case typ == 0:
			v, err := binary.ReadUvarint(r)
			if err != nil {
				return fmt.Errorf("%w: %v", errPiece, err)
			}
			if (num == 1 || num == 2) && p.placed {
				// The data went to the object these name.
				return fmt.Errorf("%w: field %d after the data", errPiece, num)
			}
			switch num {
			case 1:
				p.index = int32(v)
			case 2:
				p.size, sawSize = int64(v), true
			case 4:
				p.missing = v != 0
			}
		case typ == 2:
			l, err := binary.ReadUvarint(r)
			if err != nil || l > uint64(r.Remaining()) {
				return fmt.Errorf("%w: field %d of %d bytes", errPiece, num, l)
			}
			var dst []byte
			if num == 3 && p.data == nil && !p.placed && sawSize && into != nil {
				if dst = into(p, int(l)); dst != nil {
					p.placed = true
				}
			}
			if dst == nil {
				dst = make([]byte, l)
				switch num {
				case 3:
					p.data, p.placed = dst, false
				case 5:
					p.digest = dst
				}
			}
			if _, err := io.ReadFull(r, dst); err != nil {
				return fmt.Errorf("%w: %v", errPiece, err)
			}
		case typ == 1 || typ == 5:
			skip := 8
			if typ == 5 {
				skip = 4
			}
			if _, err := io.CopyN(io.Discard, r, int64(skip)); err != nil {
				return fmt.Errorf("%w: %v", errPiece, err)
			}
		default:
			return fmt.Errorf("%w: wire type %d", errPiece, typ)
		}
	}
	return nil
}
