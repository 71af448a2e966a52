package remote

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/pb"
)

// piecesServer answers GetMany with its objects cut in pieces of piece
// bytes: a master of any piece size.
type piecesServer struct {
	pb.UnimplementedExportServer
	objs  map[object.Digest][]byte
	piece int
}

func (s *piecesServer) GetMany(req *pb.GetManyRequest, stream pb.Export_GetManyServer) error {
	for i, raw := range req.GetDigests() {
		b, ok := s.objs[object.Digest(raw)]
		if !ok {
			if err := stream.Send(&pb.GetManyResponse{Index: int32(i), Missing: true}); err != nil {
				return err
			}
			continue
		}
		for off := 0; off < len(b); off += s.piece {
			end := min(off+s.piece, len(b))
			if err := stream.Send(&pb.GetManyResponse{Index: int32(i), Size: int64(len(b)), Data: b[off:end]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// A client puts each object together from its pieces, whatever their
// size, straight from the wire (pieceCodec), and hears of a missing one.
func TestGetManyPieces(t *testing.T) {
	objs := map[object.Digest][]byte{}
	var ds []object.Digest
	for i := range 4 {
		b, _ := object.EncodeBlob(bytes.Repeat([]byte{byte(i + 1)}, 300<<10+i))
		objs[object.Sum(b)] = b
		ds = append(ds, object.Sum(b))
	}
	ds = append(ds[:2], append([]object.Digest{object.Sum([]byte("missing"))}, ds[2:]...)...)
	for _, size := range []int{1000, 64 << 10, getPiece, 4 << 20} {
		c := piecesClient(t, objs, size)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// Lent, an object is whole while got runs; got keeps a copy.
		for _, lent := range []bool{false, true} {
			got := map[int][]byte{}
			call := c.GetMany
			if lent {
				call = c.GetManyLent
			}
			err := call(ctx, ds, func(i int, b []byte, err error) {
				if (err != nil) != (i == 2) {
					t.Errorf("pieces of %d, lent %v: object %d: %v", size, lent, i, err)
				}
				if lent && b != nil {
					b = bytes.Clone(b)
				}
				got[i] = b
			})
			if err != nil {
				t.Fatalf("pieces of %d, lent %v: %v", size, lent, err)
			}
			for i, d := range ds {
				if i != 2 && !bytes.Equal(got[i], objs[d]) {
					t.Errorf("pieces of %d, lent %v: object %d differs (%d bytes, want %d)", size, lent, i, len(got[i]), len(objs[d]))
				}
			}
		}
	}
}

// A fetch for the store only (a warmup's) is lent its objects
// (GetManyLent): each is stored before its memory takes the next, so
// every one reads back whole, whatever the sizes in between, pooled
// (up to 2 MiB) or not.
func TestFetchManyLent(t *testing.T) {
	objs := map[object.Digest][]byte{}
	var ds []object.Digest
	for i, n := range []int{0, 1, 4 << 10, 300 << 10, 1 << 20, -1, 17, 1 << 20, 200 << 10, 5} {
		b, err := object.EncodeBlob(bytes.Repeat([]byte{byte(i + 1)}, max(n, 0)))
		if n < 0 {
			// Larger than the pool's largest buffer: the file object
			// of a file of 100,000 chunks.
			const chunks = 100_000
			b, err = object.EncodeFile(&object.File{Size: chunks * object.ChunkSize, Chunks: make([]object.Digest, chunks)})
		}
		if err != nil {
			t.Fatal(err)
		}
		objs[object.Sum(b)] = b
		ds = append(ds, object.Sum(b))
	}
	c, store := piecesCache(t, objs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.fetchMany(ctx, ds); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		b, err := store.Get(ctx, d)
		if err != nil || !bytes.Equal(b, objs[d]) {
			t.Errorf("object %d (%d bytes) read back: %d bytes, %v", i, len(objs[d]), len(b), err)
		}
	}
}

// piecesClient is a client of a master of objs that sends pieces of
// piece bytes (piecesServer).
func piecesClient(t testing.TB, objs map[object.Digest][]byte, piece int) *Client {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterExportServer(srv, &piecesServer{objs: objs, piece: piece})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	c, err := Dial(ClientConfig{Addr: ln.Addr().String(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// piecesCache is a cache in a new store over a master of objs
// (piecesServer).
func piecesCache(t *testing.T, objs map[object.Digest][]byte) (*Cache, *object.DirStore) {
	t.Helper()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCache(store, piecesClient(t, objs, getPiece), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, store
}

// fetchManyEach hands each object it fetched to its caller once, whole
// and stored, and none the store had before.
func TestFetchManyEach(t *testing.T) {
	objs := map[object.Digest][]byte{}
	var ds []object.Digest
	for i := range 20 {
		b, err := object.EncodeBlob(bytes.Repeat([]byte{byte(i + 1)}, 1000*i))
		if err != nil {
			t.Fatal(err)
		}
		objs[object.Sum(b)] = b
		ds = append(ds, object.Sum(b))
	}
	c, store := piecesCache(t, objs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The first five, and one asked for twice, are there before.
	if err := c.fetchMany(ctx, ds[:5]); err != nil {
		t.Fatal(err)
	}
	handed := map[object.Digest]int{}
	err := c.fetchManyEach(ctx, append(ds, ds[7]), 0, func(d object.Digest, b []byte) {
		handed[d]++
		if !bytes.Equal(b, objs[d]) {
			t.Errorf("%s handed as %d bytes not its own", d.Short(), len(b))
		}
		if has, err := store.HasMany([]object.Digest{d}); err != nil || !has[0] {
			t.Errorf("%s handed before it was stored: %v, %v", d.Short(), has, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if want := min(i/5, 1); handed[d] != want {
			t.Errorf("object %d handed %d times, want %d", i, handed[d], want)
		}
	}
}

// pieceCodec reads what proto wrote, fields in any order, unknown ones
// skipped; data it is not told where to put get a slice of their own.
func TestPieceDecode(t *testing.T) {
	for _, m := range []*pb.GetManyResponse{
		{Index: 3, Size: 10, Data: []byte("0123456789")},
		{Index: 0, Size: 1 << 20, Data: []byte("start")},
		{Index: 7, Missing: true},
		{},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var p piece
		if err := (pieceCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &p); err != nil {
			t.Fatalf("%v: %v", m, err)
		}
		if p.index != m.Index || p.size != m.Size || p.missing != m.Missing || !bytes.Equal(p.data, m.Data) || p.placed {
			t.Errorf("%v: decoded as %+v", m, p)
		}
	}

	// Data first, then index and size, then a field proto does not know:
	// the data cannot be placed before its object is known.
	var b []byte
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("abc"))
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 2)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, 3)
	b = protowire.AppendTag(b, 9, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 1)
	placed := 0
	p := piece{into: func(*piece, int) []byte { placed++; return make([]byte, 3) }}
	// Split across buffers, as gRPC hands a message over.
	if err := p.decode(mem.BufferSlice{mem.SliceBuffer(b[:2]), mem.SliceBuffer(b[2:])}); err != nil {
		t.Fatal(err)
	}
	if p.index != 2 || p.size != 3 || string(p.data) != "abc" || p.placed || placed != 0 {
		t.Errorf("data first: %+v, placed %d times", p, placed)
	}

	// In proto's order, the data go where into says.
	dst := make([]byte, 5)
	p = piece{into: func(q *piece, n int) []byte {
		if q.index != 3 || q.size != 10 || n != 5 {
			t.Errorf("into(%d, %d, %d)", q.index, q.size, n)
		}
		return dst
	}}
	m, _ := proto.Marshal(&pb.GetManyResponse{Index: 3, Size: 10, Data: []byte("hello")})
	if err := p.decode(mem.BufferSlice{mem.SliceBuffer(m)}); err != nil || !p.placed || p.data != nil || string(dst) != "hello" {
		t.Errorf("placed: %+v, %q, %v", p, dst, err)
	}

	// Cut short: an error, not a piece.
	if err := p.decode(mem.BufferSlice{mem.SliceBuffer(m[:len(m)-1])}); err == nil {
		t.Error("a piece cut short decoded")
	}

	// Index 0, which proto leaves out: placed as well.
	p = piece{into: func(q *piece, n int) []byte {
		if q.index != 0 || q.size != 10 || n != 5 {
			t.Errorf("into(%d, %d, %d)", q.index, q.size, n)
		}
		return dst
	}}
	m, _ = proto.Marshal(&pb.GetManyResponse{Index: 0, Size: 10, Data: []byte("olleh")})
	if err := p.decode(mem.BufferSlice{mem.SliceBuffer(m)}); err != nil || !p.placed || p.data != nil || string(dst) != "olleh" {
		t.Errorf("index 0 placed: %+v, %q, %v", p, dst, err)
	}

	// An index or a size after data placed would make them another
	// object's: refused.
	for _, field := range []protowire.Number{1, 2} {
		b = protowire.AppendTag(nil, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, 5)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, []byte("hello"))
		b = protowire.AppendTag(b, field, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		p = piece{into: func(*piece, int) []byte { return dst }}
		if err := p.decode(mem.BufferSlice{mem.SliceBuffer(b)}); err == nil {
			t.Errorf("field %d after placed data decoded: %+v", field, p)
		}
	}
}

// Objects come whole however the master cuts them, the first requested
// one (index 0, which proto leaves out) and the followed ones too, which
// go into their objects as they come; a followed object's pieces that do
// not make one fail the call.
func TestGetManyFollowedPieces(t *testing.T) {
	a, b, f := object.Sum([]byte("hello")), object.Sum([]byte("abc")), object.Sum([]byte("follow"))
	good := []*pb.GetManyResponse{
		{Index: 0, Size: 5, Data: []byte("hel")},
		{Index: 0, Size: 5, Data: []byte("lo")},
		{Index: 2, Size: 6, Data: []byte("fol"), Digest: f[:]},
		{Index: 2, Size: 6, Data: []byte("low")},
		{Index: 2, Size: 3, Data: []byte("abc"), Digest: b[:]},
		{Index: 1, Size: 3, Data: []byte("abc")},
	}
	c := dialScripted(t, &scriptedServer{send: good})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Lent, the objects come the same, each in memory the pool hands the
	// next: what was handed is read before the callback returns.
	for _, lent := range []bool{false, true, true} {
		get := c.GetManyFollow
		if lent {
			get = c.GetManyFollowLent
		}
		got := map[int]string{}
		fol := map[object.Digest]string{}
		err := get(ctx, []object.Digest{a, b}, 1<<20, func(i int, b []byte, err error) {
			if err != nil {
				t.Errorf("object %d: %v", i, err)
			}
			got[i] = string(b)
		}, func(d object.Digest, b []byte) { fol[d] = string(b) })
		if err != nil || got[0] != "hello" || got[1] != "abc" || fol[f] != "follow" || fol[b] != "abc" || len(fol) != 2 {
			t.Fatalf("lent %v: got %v, followed %v, err %v", lent, got, fol, err)
		}
	}

	for _, tc := range []struct {
		name string
		send []*pb.GetManyResponse
	}{
		{"no digest", []*pb.GetManyResponse{{Index: 1, Size: 2, Data: []byte("ab")}}},
		{"no digest, then one", []*pb.GetManyResponse{{Index: 1, Size: 4, Data: []byte("ab")}, {Index: 1, Size: 4, Data: []byte("cd"), Digest: f[:]}}},
		{"a digest on its second piece", []*pb.GetManyResponse{{Index: 1, Size: 4, Data: []byte("ab"), Digest: f[:]}, {Index: 1, Size: 4, Data: []byte("cd"), Digest: f[:]}}},
		{"longer than its size", []*pb.GetManyResponse{{Index: 1, Size: 3, Data: []byte("ab"), Digest: f[:]}, {Index: 1, Size: 3, Data: []byte("cd")}}},
		{"a short digest", []*pb.GetManyResponse{{Index: 1, Size: 2, Data: []byte("ab"), Digest: f[:5]}}},
		{"cut short by a requested one", []*pb.GetManyResponse{{Index: 1, Size: 4, Data: []byte("ab"), Digest: f[:]}, {Index: 0, Size: 5, Data: []byte("hello")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialScripted(t, &scriptedServer{send: tc.send})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := c.GetManyFollow(ctx, []object.Digest{a}, 1<<20, func(int, []byte, error) {}, func(d object.Digest, b []byte) {
				t.Errorf("took a followed object of %q", b)
			})
			if err == nil {
				t.Error("no error")
			}
		})
	}
}

// A GetMany call asks the disk for each object once, before it is read,
// and never for more than aheadBytes past the one it reads.
func TestSendAheadWindow(t *testing.T) {
	const size = 3 << 20
	ds := make([]object.Digest, 20)
	for i := range ds {
		ds[i][0] = byte(i + 1)
	}
	asked := map[object.Digest]int{}
	a := &sendAhead{willNeed: func(d object.Digest) int64 {
		asked[d]++
		if d[0] == 5 {
			return 0 // a file, not packed: nothing asked
		}
		return size
	}}
	for i, d := range ds {
		a.upTo(ds, i)
		var beyond int64
		for j, d := range ds[i+1:] {
			if n := asked[d]; n > 1 {
				t.Fatalf("object %d asked for %d times", i+1+j, n)
			} else if n == 1 && d[0] != 5 {
				beyond += size
			}
		}
		if beyond > aheadBytes+size-1 {
			t.Fatalf("at object %d, %d bytes asked for ahead, over %d", i, beyond, aheadBytes)
		}
		if i+1 < len(ds) && asked[ds[i+1]] == 0 {
			t.Fatalf("at object %d, the next one was not asked for", i)
		}
		if i > 0 && asked[d] == 0 {
			t.Fatalf("object %d was read without being asked for ahead", i)
		}
	}
}

// BenchmarkGetMany receives a call of 64 objects of 100 KiB, each into
// memory of its own (GetMany, a reader's fetch) and lent (GetManyLent, a
// warmup's): what each costs the client in allocations.
func BenchmarkGetMany(b *testing.B) {
	objs := map[object.Digest][]byte{}
	var ds []object.Digest
	var total int64
	for i := range 64 {
		enc, err := object.EncodeBlob(bytes.Repeat([]byte{byte(i)}, 100<<10))
		if err != nil {
			b.Fatal(err)
		}
		objs[object.Sum(enc)] = enc
		ds = append(ds, object.Sum(enc))
		total += int64(len(enc))
	}
	c := piecesClient(b, objs, getPiece)
	for _, lent := range []bool{false, true} {
		name, call := "owned", c.GetMany
		if lent {
			name, call = "lent", c.GetManyLent
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			var sum byte
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				err := call(ctx, ds, func(i int, buf []byte, err error) {
					if err == nil {
						sum ^= buf[len(buf)-1]
					}
				})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			_ = sum
		})
	}
}
