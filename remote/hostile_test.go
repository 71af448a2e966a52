package remote

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/pb"
)

// dialScripted serves impl on loopback, as a master would, and returns a
// client of it that gives up on a silent call within two seconds.
func dialScripted(tb testing.TB, impl pb.ExportServer, opts ...grpc.ServerOption) *Client {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterExportServer(srv, impl)
	go srv.Serve(ln)
	tb.Cleanup(srv.Stop)
	c, err := Dial(ClientConfig{Addr: ln.Addr().String(), Timeout: 2 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// scriptedServer answers every GetMany, and every Get, with the same
// responses, whatever was asked: a master that is broken or hostile.
type scriptedServer struct {
	pb.UnimplementedExportServer
	send []*pb.GetManyResponse
	gets []*pb.GetResponse
}

func (s *scriptedServer) Get(_ *pb.GetRequest, stream pb.Export_GetServer) error {
	for _, m := range s.gets {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (s *scriptedServer) GetMany(_ *pb.GetManyRequest, stream pb.Export_GetManyServer) error {
	for _, m := range s.send {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// Get checks what a master sends as GetMany does: a size that no object
// has, or one that changes as the object comes, fails the call.
func TestGetHostile(t *testing.T) {
	d := object.Sum([]byte("x"))
	big := make([]byte, 1<<20)
	for _, tc := range []struct {
		name string
		gets []*pb.GetResponse
	}{
		{"negative size", []*pb.GetResponse{{Size: -1, Data: []byte("x")}}},
		{"size past the bound", []*pb.GetResponse{{Size: maxObject + 1}}},
		{"longer than its size", []*pb.GetResponse{{Size: 1, Data: []byte("xy")}}},
		{"size raised as it comes", []*pb.GetResponse{{Size: 1 << 20, Data: big}, {Size: 2 << 20, Data: big}, {Size: 3 << 20, Data: big}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialScripted(t, &scriptedServer{gets: tc.gets})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if b, err := c.Get(ctx, d); err == nil {
				t.Fatalf("took %d bytes from a hostile master", len(b))
			}
		})
	}
}

// A master whose GetMany ends well without the object asked for is asked
// with Get, and that is not taken for damage on the wire.
func TestGetManyEndsWithout(t *testing.T) {
	obj, _ := object.EncodeBlob([]byte("the object"))
	d := object.Sum(obj)
	c := dialScripted(t, &scriptedServer{gets: []*pb.GetResponse{{Size: int64(len(obj)), Data: obj}}})
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewCache(store, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := cache.GetForRead(ctx, d)
	if err != nil || !bytes.Equal(b, obj) {
		t.Fatalf("get: %q, %v", b, err)
	}
	if n := cache.Stats().Corrupt; n != 0 {
		t.Errorf("%d objects counted damaged; the master sent none", n)
	}
}

// A master's pieces are checked before they are used: sizes that do not
// fit an object, indexes out of range and pieces out of order make the
// call fail, and never the worker.
func TestGetManyHostilePieces(t *testing.T) {
	d := object.Sum([]byte("x"))
	for _, tc := range []struct {
		name string
		send []*pb.GetManyResponse
	}{
		{"negative size", []*pb.GetManyResponse{{Index: 0, Size: -1, Data: []byte("x")}}},
		{"negative size, no data", []*pb.GetManyResponse{{Index: 0, Size: -5}}},
		{"size past the bound", []*pb.GetManyResponse{{Index: 0, Size: maxObject + 1, Data: []byte("x")}}},
		{"longer than its size", []*pb.GetManyResponse{{Index: 0, Size: 1, Data: []byte("xy")}}},
		{"index past the request", []*pb.GetManyResponse{{Index: 5, Size: 1, Data: []byte("x")}}},
		{"negative index", []*pb.GetManyResponse{{Index: -1, Size: 1, Data: []byte("x")}}},
		{"cut short", []*pb.GetManyResponse{{Index: 0, Size: 10, Data: []byte("x")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialScripted(t, &scriptedServer{send: tc.send})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got []byte
			err := c.GetMany(ctx, []object.Digest{d}, func(i int, b []byte, err error) {
				if err == nil {
					got = b
				}
			})
			if err == nil && got != nil {
				t.Fatalf("took %d bytes from a hostile master", len(got))
			}
		})
	}
}

// rawMsg is a message sent as its bytes, whatever they are.
type rawMsg []byte

// rawCodec sends a rawMsg as is and anything else as proto does: a
// master that writes any bytes on the wire.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMsg); ok {
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// rawServer answers every GetMany with the messages in script, as bytes.
type rawServer struct {
	pb.UnimplementedExportServer
	script atomic.Pointer[[][]byte]
}

func (s *rawServer) GetMany(_ *pb.GetManyRequest, stream pb.Export_GetManyServer) error {
	for _, m := range *s.script.Load() {
		r := rawMsg(m)
		if err := stream.SendMsg(&r); err != nil {
			return err
		}
	}
	return nil
}

// splitMessages cuts b into messages, each led by a byte of its length.
func splitMessages(b []byte) [][]byte {
	var ms [][]byte
	for len(b) > 0 {
		n := min(int(b[0]), len(b)-1)
		ms = append(ms, b[1:1+n])
		b = b[1+n:]
	}
	return ms
}

// Whatever a master writes on the wire, a GetMany call ends, within its
// deadline, with objects no longer than the sizes the master declared and
// the bound on any object, or with an error: it never panics or hangs.
func FuzzGetManyWire(f *testing.F) {
	piece := func(index int32, size int64, data []byte, digest []byte, missing bool) []byte {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(index))
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(size))
		if data != nil {
			b = protowire.AppendTag(b, 3, protowire.BytesType)
			b = protowire.AppendBytes(b, data)
		}
		if missing {
			b = protowire.AppendTag(b, 4, protowire.VarintType)
			b = protowire.AppendVarint(b, 1)
		}
		if digest != nil {
			b = protowire.AppendTag(b, 5, protowire.BytesType)
			b = protowire.AppendBytes(b, digest)
		}
		return b
	}
	msgs := func(ms ...[]byte) []byte {
		var b []byte
		for _, m := range ms {
			b = append(append(b, byte(len(m))), m...)
		}
		return b
	}
	d := object.Sum([]byte("x"))
	f.Add(msgs(piece(0, 3, []byte("abc"), nil, false), piece(1, 0, nil, nil, true)))
	f.Add(msgs(piece(0, 2, []byte("ab"), nil, false), piece(2, 4, []byte("fo"), d[:], false), piece(2, 4, []byte("ll"), nil, false), piece(1, 1, []byte("z"), nil, false)))
	f.Add(msgs(piece(0, -1, []byte("x"), nil, false)))
	f.Add(msgs(piece(2, -7, []byte("x"), d[:], false)))
	f.Add(msgs(piece(0, 4, []byte("ab"), nil, false), piece(1, 1, []byte("c"), nil, false)))

	s := &rawServer{}
	c := dialScripted(f, s, grpc.ForceServerCodecV2(rawCodec{}))
	ds := []object.Digest{object.Sum([]byte("a")), object.Sum([]byte("b"))}
	f.Fuzz(func(t *testing.T, b []byte) {
		script := splitMessages(b)
		s.script.Store(&script)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := c.GetManyFollow(ctx, ds, 1<<20, func(i int, b []byte, err error) {
			if i < 0 || i >= len(ds) {
				t.Fatalf("object %d of %d", i, len(ds))
			}
			if err == nil && int64(len(b)) > maxObject {
				t.Fatalf("object %d of %d bytes", i, len(b))
			}
		}, func(d object.Digest, b []byte) {
			if int64(len(b)) > maxObject {
				t.Fatalf("followed object of %d bytes", len(b))
			}
		})
		if time.Since(start) > 9*time.Second {
			t.Fatalf("call took %s (err %v)", time.Since(start), err)
		}
	})
}

// A trace from a master or a bucket is read whole or refused: what is
// read is bounded as a local trace is, and encodes back to a trace that
// reads the same.
func FuzzParseTrace(f *testing.F) {
	d := object.Sum([]byte("x"))
	f.Add(EncodeTrace(&Trace{Version: d, Entries: []TraceEntry{{d, 10}, {d, 0}}}))
	f.Add([]byte(traceMagic + "\nversion " + d.String() + "\nend 0\n"))
	f.Add([]byte(traceMagic + "\nversion " + d.String() + "\n" + d.String() + " -1\nend 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ParseTrace(b, "fuzz")
		if err != nil {
			if !errors.Is(err, object.ErrCorrupt) {
				t.Fatalf("%v: not ErrCorrupt", err)
			}
			return
		}
		if len(tr.Entries) > TraceObjects {
			t.Fatalf("%d entries read", len(tr.Entries))
		}
		for _, e := range tr.Entries {
			if e.Size < 0 || e.Size > maxObject {
				t.Fatalf("an entry of %d bytes read", e.Size)
			}
		}
		again, err := ParseTrace(EncodeTrace(tr), "again")
		if err != nil || again.Version != tr.Version || !slices.Equal(again.Entries, tr.Entries) {
			t.Fatalf("encoded again: %v", err)
		}
	})
}
