// Command crawldb behaves like a crawler's embedded database, for the
// checkpoint tests: in DIR it keeps numbered append-only log files
// (log-000001, log-000002, ...) open, appends fixed-size records, each with
// a sequence number and a checksum, fsyncs after every record, and rolls to
// a new file every -roll records. On start it scans the logs, counts the
// valid records, prints "recovered N" and appends a recovery record to the
// last log file, as such databases do.
//
//	crawldb -dir DIR [-records N] [-roll N] [-interval D]
//	crawldb -dir DIR -count
//
// With -records 0 it writes until killed. With -count it only prints
// "recovered N" and writes nothing. A record that is torn or fails its
// checksum ends the last log (it is cut off on recovery); anywhere else it
// is corruption, and crawldb exits 2.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	recSize = 64
	magic   = "CRDB"

	kindData     = 1
	kindRecovery = 2
)

// A record is: magic (4), kind (4), seq (8), payload (44), crc32 of the
// first 60 bytes (4).
func encode(kind uint32, seq uint64) []byte {
	b := make([]byte, recSize)
	copy(b, magic)
	binary.LittleEndian.PutUint32(b[4:], kind)
	binary.LittleEndian.PutUint64(b[8:], seq)
	copy(b[16:60], fmt.Sprintf("record %d kind %d %s", seq, kind, strings.Repeat("x", 44)))
	binary.LittleEndian.PutUint32(b[60:], crc32.ChecksumIEEE(b[:60]))
	return b
}

// valid reports whether b is a whole record with sequence number seq.
func valid(b []byte, seq uint64) bool {
	return len(b) == recSize && string(b[:4]) == magic &&
		binary.LittleEndian.Uint32(b[60:]) == crc32.ChecksumIEEE(b[:60]) &&
		binary.LittleEndian.Uint64(b[8:]) == seq
}

func logName(i int) string { return fmt.Sprintf("log-%06d", i) }

// scan returns the log files in order, the number of valid records, and the
// valid length of the last file.
func scan(dir string) (files []string, records uint64, lastValid int64, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, 0, err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "log-") {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	for i, name := range files {
		if name != logName(i+1) {
			return nil, 0, 0, fmt.Errorf("log files out of sequence: %s where %s belongs", name, logName(i+1))
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, 0, 0, err
		}
		var off int64
		for ; off+recSize <= int64(len(b)) && valid(b[off:off+recSize], records+1); off += recSize {
			records++
		}
		if off != int64(len(b)) && i != len(files)-1 {
			return nil, 0, 0, fmt.Errorf("%s: corrupt record at offset %d of %d", name, off, len(b))
		}
		lastValid = off
	}
	return files, records, lastValid, nil
}

func main() {
	dir := flag.String("dir", ".", "database directory")
	count := flag.Bool("count", false, "only print the recovered record count")
	records := flag.Int("records", 0, "records to write after recovery (0: until killed)")
	roll := flag.Int("roll", 20, "records per log file")
	interval := flag.Duration("interval", 0, "pause between records")
	flag.Parse()
	if err := run(*dir, *count, *records, *roll, *interval); err != nil {
		fmt.Fprintln(os.Stderr, "crawldb:", err)
		os.Exit(2)
	}
}

func run(dir string, count bool, records, roll int, interval time.Duration) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files, n, lastValid, err := scan(dir)
	if err != nil {
		return err
	}
	if count {
		fmt.Printf("recovered %d\n", n)
		return nil
	}
	// Keep every log open, as the database does.
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	for i, name := range files {
		flags := os.O_RDONLY
		if i == len(files)-1 {
			flags = os.O_RDWR
		}
		f, err := os.OpenFile(filepath.Join(dir, name), flags, 0)
		if err != nil {
			return err
		}
		open = append(open, f)
	}
	var cur *os.File
	var inCur int64
	if len(open) > 0 {
		cur = open[len(open)-1]
		st, err := cur.Stat()
		if err != nil {
			return err
		}
		if st.Size() != lastValid {
			// Cut off a torn tail.
			if err := cur.Truncate(lastValid); err != nil {
				return err
			}
		}
		inCur = lastValid / recSize
	} else {
		f, err := os.OpenFile(filepath.Join(dir, logName(1)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		open = append(open, f)
		cur = f
	}
	off, err := cur.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if off != inCur*recSize {
		return fmt.Errorf("%s: size %d after recovery, want %d", cur.Name(), off, inCur*recSize)
	}
	fmt.Printf("recovered %d\n", n)
	appendRec := func(kind uint32) error {
		n++
		if _, err := cur.Write(encode(kind, n)); err != nil {
			return err
		}
		inCur++
		return cur.Sync()
	}
	// The recovery record goes to the last log file, whatever its length.
	if err := appendRec(kindRecovery); err != nil {
		return err
	}
	for i := 0; records == 0 || i < records; i++ {
		if inCur >= int64(roll) {
			f, err := os.OpenFile(filepath.Join(dir, logName(len(open)+1)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			open = append(open, f)
			cur, inCur = f, 0
		}
		if err := appendRec(kindData); err != nil {
			return err
		}
		if interval > 0 {
			time.Sleep(interval)
		}
	}
	fmt.Printf("wrote %d\n", n)
	return nil
}
