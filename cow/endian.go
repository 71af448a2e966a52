package cow

import "encoding/binary"

// getdents64 records are in the machine's byte order; every platform cowfs
// builds for (amd64, arm64) is little-endian.
func nativeUint64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func nativeUint16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
