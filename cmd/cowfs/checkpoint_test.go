package main

// Checkpoint tests (issue 4): a crawler-like database (testdata/crawldb)
// runs in real mounts while snapshots are taken, restored, resumed, killed
// and restored again, all through the cowfs binary.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/statedir"
)

// buildCrawldb builds testdata/crawldb, once per test binary, and returns
// its path.
func buildCrawldb(t *testing.T) string {
	t.Helper()
	crawldbBuild.once.Do(func() {
		// Next to the cowfs binary, where go build finds it up to date.
		out := filepath.Join(filepath.Dir(bin), "crawldb")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "./testdata/crawldb").CombinedOutput(); err != nil {
			crawldbBuild.err = fmt.Errorf("%w\n%s", err, b)
			return
		}
		crawldbBuild.path = out
	})
	if crawldbBuild.err != nil {
		t.Fatalf("build crawldb: %v", crawldbBuild.err)
	}
	return crawldbBuild.path
}

// crawldbBuild is the one build of crawldb the tests of the binary share.
var crawldbBuild struct {
	once sync.Once
	path string
	err  error
}

// crawl is a crawldb process writing until killed.
type crawl struct {
	cmd       *exec.Cmd
	exited    chan struct{}
	recovered int
}

// startCrawl starts crawldb on dir, writing until killed, and returns once
// it has recovered (and so appended its recovery record). It is killed in
// cleanup if the test has not killed it.
func startCrawl(t *testing.T, crawldb, dir string) *crawl {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, crawldb, "-dir", dir, "-roll", "20", "-interval", "2ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &crawl{cmd: cmd, exited: make(chan struct{})}
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		l, _ := br.ReadString('\n')
		first <- l
		io.Copy(io.Discard, br)
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		killCrawl(t, c)
		cancel()
	})
	select {
	case l := <-first:
		if !strings.HasPrefix(l, "recovered ") {
			killCrawl(t, c)
			t.Fatalf("crawldb on %s: %q, stderr %q", dir, l, stderr.String())
		}
		c.recovered = parseRecovered(t, l)
	case <-time.After(30 * time.Second):
		t.Fatalf("crawldb on %s did not recover in 30s", dir)
	}
	return c
}

// killCrawl kills c with SIGKILL and waits for it to be gone.
func killCrawl(t *testing.T, c *crawl) {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Errorf("crawldb did not exit after SIGKILL")
	}
}

// countRecords runs crawldb -count on dir and returns the recovered count.
func countRecords(t *testing.T, crawldb, dir string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, crawldb, "-dir", dir, "-count").CombinedOutput()
	if err != nil {
		t.Fatalf("crawldb -count %s: %v: %s", dir, err, out)
	}
	return parseRecovered(t, string(out))
}

func parseRecovered(t *testing.T, out string) int {
	t.Helper()
	m := regexp.MustCompile(`recovered (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("crawldb said %q, want \"recovered N\"", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// runCrawl runs crawldb on dir to completion, writing records records after
// its recovery record, and returns the count it recovered.
func runCrawl(t *testing.T, crawldb, dir string, records int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, crawldb, "-dir", dir, "-roll", "20", "-records", strconv.Itoa(records)).CombinedOutput()
	if err != nil {
		t.Fatalf("crawldb %s: %v: %s", dir, err, out)
	}
	return parseRecovered(t, string(out))
}

// logBytes is the total size of dir's log files.
func logBytes(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// waitGrowth waits until dir's logs are at least by bytes larger than from.
func waitGrowth(t *testing.T, dir string, from, by int64) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := logBytes(dir)
		if n >= from+by {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: logs did not grow from %d by %d in 30s (now %d)", dir, from, by, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// listing describes every entry under root: type, permissions, mtime, size
// and SHA-256 of regular files, symlink targets.
func listing(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o", st.Mode)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += fmt.Sprintf(" mtime=%d size=%d sha256=%s", st.Mtim.Nano(), len(b), hex.EncodeToString(sum[:]))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case unix.S_IFDIR:
			if rel != "." {
				desc += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", root, err)
	}
	return out
}

// diffListings returns what differs between two listings, sorted.
func diffListings(a, b map[string]string) []string {
	var d []string
	for p, x := range a {
		if y, ok := b[p]; !ok {
			d = append(d, "- "+p+" "+x)
		} else if x != y {
			d = append(d, "M "+p+": "+x+" => "+y)
		}
	}
	for p, y := range b {
		if _, ok := a[p]; !ok {
			d = append(d, "+ "+p+" "+y)
		}
	}
	sort.Strings(d)
	return d
}

// cli runs cowfs with the state directory and fails the test unless it
// exits 0.
func cli(t *testing.T, state string, args ...string) string {
	t.Helper()
	out, code := run(t, append([]string{"--state", state}, args...)...)
	if code != 0 {
		t.Fatalf("cowfs %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// restoreAt restores snapshot name at mnt, with the given restore flags,
// and returns mnt; it is unmounted in cleanup.
func restoreAt(t *testing.T, state, name, mnt string, flags ...string) string {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	unmountOnCleanup(t, mnt)
	cli(t, state, append([]string{"restore", name, mnt}, flags...)...)
	return mnt
}

// unmountCLI unmounts mnt with "cowfs unmount" and waits for its mount
// process to exit. "cowfs unmount" returns once the kernel has let go of
// the mount; the process then closes its layers and drops a restore's pin,
// and what follows in a test (gc, a restore at the same place) depends on
// that having happened.
func unmountCLI(t *testing.T, mnt string) {
	t.Helper()
	pid := daemonPid(t, mnt)
	if out, code := run(t, "unmount", mnt); code != 0 {
		t.Fatalf("unmount %s: exit %d: %s", mnt, code, out)
	}
	if mounted(t, mnt) {
		t.Fatalf("%s still mounted after unmount", mnt)
	}
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("mount process %d of %s still running 30s after unmount", pid, mnt)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func verifyOK(t *testing.T, state string, names ...string) {
	t.Helper()
	for _, n := range names {
		out, code := run(t, "--state", state, "verify", n)
		if code != 0 || !strings.Contains(out, "ok") {
			t.Errorf("verify %s: exit %d: %s", n, code, out)
		}
	}
}

// TestCheckpointResume is the crawler's story: snapshots of a running
// database, a resume from an older one that appends to its last log and is
// killed, and a second resume that starts from exactly the same bytes. It
// runs again with the kernel's writeback cache on the mount and the
// restores, where the database's last writes may still sit in the kernel
// when a snapshot is asked for.
func TestCheckpointResume(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: builds crawldb and resumes it from snapshots, twice (runs without -short)")
	}
	crawldb := buildCrawldb(t)
	t.Run("default", func(t *testing.T) { checkpointResume(t, crawldb) })
	t.Run("writeback", func(t *testing.T) { checkpointResume(t, crawldb, "--writeback-cache") })
}

func checkpointResume(t *testing.T, crawldb string, flags ...string) {
	e := newEnv(t)
	cli(t, e.state, append([]string{"mount", e.mnt, "--lower", e.lower}, flags...)...)
	db := filepath.Join(e.mnt, "db")

	c := startCrawl(t, crawldb, db)
	size := logBytes(db)
	names := []string{"s1", "s2", "s3", "s4"}
	for _, name := range names {
		// Some records, and at least one roll to a new log, between
		// snapshots.
		size = waitGrowth(t, db, size, 25*64)
		out := cli(t, e.state, "snapshot", e.mnt, name)
		if !strings.Contains(out, "snapshot "+name) {
			t.Errorf("snapshot %s said %q", name, out)
		}
	}
	// The crawl kept running through every snapshot.
	waitGrowth(t, db, size, 5*64)
	verifyOK(t, e.state, names...)
	if out := cli(t, e.state, "snapshots", "diff", "s1", "s2"); !strings.Contains(out, "db/log-") {
		t.Errorf("diff s1 s2 shows no log change: %q", out)
	}
	// Each snapshot is one instant of the database: every log but the
	// last is whole, and each holds more records than the one before.
	prev, all := 0, t.TempDir()
	for _, name := range names {
		r := restoreAt(t, e.state, name, filepath.Join(all, name), flags...)
		n := countRecords(t, crawldb, filepath.Join(r, "db"))
		if n <= prev {
			t.Errorf("snapshot %s holds %d records, the one before %d", name, n, prev)
		}
		prev = n
	}
	for _, name := range names {
		unmountCLI(t, filepath.Join(all, name))
	}

	// First resume from s2: record the bytes before anything runs.
	r := restoreAt(t, e.state, "s2", filepath.Join(t.TempDir(), "resume"), flags...)
	want := listing(t, r)
	if _, ok := want["db/log-000002"]; !ok {
		t.Fatalf("s2 has no second log file: %v", want)
	}
	if _, ok := want["crawlab_project/spiders/quotes.py"]; !ok {
		t.Fatalf("s2 lacks the lower's spider: %v", want)
	}
	n1 := countRecords(t, crawldb, filepath.Join(r, "db"))
	if n1 == 0 {
		t.Fatal("s2 holds no records")
	}
	rc := startCrawl(t, crawldb, filepath.Join(r, "db"))
	if rc.recovered != n1 {
		t.Errorf("first resume recovered %d, crawldb -count said %d", rc.recovered, n1)
	}
	waitGrowth(t, filepath.Join(r, "db"), logBytes(filepath.Join(r, "db")), 30*64)
	killCrawl(t, rc)
	if d := diffListings(want, listing(t, r)); len(d) == 0 {
		t.Fatal("the resumed crawl changed nothing in the restore")
	}
	unmountCLI(t, r)

	// Second resume from s2, at the same place: the same bytes, the same
	// count.
	restoreAt(t, e.state, "s2", r, flags...)
	if d := diffListings(want, listing(t, r)); len(d) > 0 {
		t.Errorf("second restore of s2 differs from the first:\n%s", strings.Join(d, "\n"))
	}
	if n := countRecords(t, crawldb, filepath.Join(r, "db")); n != n1 {
		t.Errorf("second resume recovers %d records, the first %d", n, n1)
	}
	unmountCLI(t, r)
	verifyOK(t, e.state, names...)

	killCrawl(t, c)
	unmountCLI(t, e.mnt)
}

// TestCheckpointTwoRestores mounts two restores of one snapshot at once,
// writes to each differently, and checks neither sees the other's writes
// and the snapshot stays as it was.
func TestCheckpointTwoRestores(t *testing.T) {
	t.Parallel()
	crawldb := buildCrawldb(t)
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	db := filepath.Join(e.mnt, "db")
	runCrawl(t, crawldb, db, 30)
	base := countRecords(t, crawldb, db)
	cli(t, e.state, "snapshot", e.mnt, "s")
	want := listing(t, e.mnt)
	unmountCLI(t, e.mnt)

	tmp := t.TempDir()
	a := restoreAt(t, e.state, "s", filepath.Join(tmp, "a"))
	b := restoreAt(t, e.state, "s", filepath.Join(tmp, "b"))
	if d := diffListings(want, listing(t, a)); len(d) > 0 {
		t.Fatalf("restore a differs from the mount at snapshot time:\n%s", strings.Join(d, "\n"))
	}
	// a: 10 more records, a new note, the spider truncated.
	runCrawl(t, crawldb, filepath.Join(a, "db"), 10)
	if err := os.WriteFile(filepath.Join(a, "note-a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(a, "crawlab_project/spiders/quotes.py"), 3); err != nil {
		t.Fatal(err)
	}
	// b: 25 more records, another note, run.sh removed.
	runCrawl(t, crawldb, filepath.Join(b, "db"), 25)
	if err := os.WriteFile(filepath.Join(b, "note-b"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(b, "run.sh")); err != nil {
		t.Fatal(err)
	}

	if n := countRecords(t, crawldb, filepath.Join(a, "db")); n != base+1+10 {
		t.Errorf("restore a holds %d records, want %d", n, base+1+10)
	}
	if n := countRecords(t, crawldb, filepath.Join(b, "db")); n != base+1+25 {
		t.Errorf("restore b holds %d records, want %d", n, base+1+25)
	}
	for _, c := range []struct {
		mnt, path string
		exists    bool
	}{
		{a, "note-a", true}, {a, "note-b", false}, {a, "run.sh", true},
		{b, "note-b", true}, {b, "note-a", false},
	} {
		_, err := os.Stat(filepath.Join(c.mnt, c.path))
		if (err == nil) != c.exists {
			t.Errorf("%s in %s: exists=%v, want %v", c.path, c.mnt, err == nil, c.exists)
		}
	}
	if got, err := os.ReadFile(filepath.Join(b, "crawlab_project/spiders/quotes.py")); err != nil || string(got) != "print('q')\n" {
		t.Errorf("b sees a's truncate: %q %v", got, err)
	}
	verifyOK(t, e.state, "s")
	unmountCLI(t, a)
	unmountCLI(t, b)
	c := restoreAt(t, e.state, "s", filepath.Join(tmp, "c"))
	if d := diffListings(want, listing(t, c)); len(d) > 0 {
		t.Errorf("a third restore differs from the snapshot:\n%s", strings.Join(d, "\n"))
	}
	unmountCLI(t, c)
}

// TestCheckpointCLIErrors checks that each wrong snapshot, restore or
// verify exits non-zero, says what is wrong, and changes nothing.
func TestCheckpointCLIErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	cli(t, e.state, "snapshot", e.mnt, "s1")
	before := cli(t, e.state, "snapshots")
	// Written after s1: a refused "snapshot s1" must not take it in.
	if err := os.WriteFile(filepath.Join(e.mnt, "after-s1"), []byte("late"), 0o644); err != nil {
		t.Fatal(err)
	}
	notMount := t.TempDir()
	rmnt := filepath.Join(t.TempDir(), "r")
	os.MkdirAll(rmnt, 0o755)
	unmountOnCleanup(t, rmnt)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"snapshot existing name", []string{"snapshot", e.mnt, "s1"}, "snapshot exists"},
		{"snapshot of a plain directory", []string{"snapshot", notMount, "x"}, "no cowfs mount"},
		{"snapshot empty name", []string{"snapshot", e.mnt, ""}, "snapshot name"},
		{"snapshot name with slash", []string{"snapshot", e.mnt, "../x"}, "snapshot name"},
		{"snapshot dot name", []string{"snapshot", e.mnt, ".hidden"}, "must not start with a dot"},
		{"restore missing name", []string{"restore", "nope", rmnt}, "no such snapshot"},
		{"restore bad name", []string{"restore", "../s1", rmnt}, "snapshot name"},
		{"verify missing name", []string{"verify", "nope"}, "no such snapshot"},
		{"verify empty name", []string{"verify", ""}, "snapshot name"},
		{"rm missing name", []string{"snapshots", "rm", "nope"}, "no such snapshot"},
		{"diff missing name", []string{"snapshots", "diff", "s1", "nope"}, "no such snapshot"},
		{"snapshot name with a newline", []string{"snapshot", e.mnt, "a\nb"}, "control character"},
		{"snapshot name not UTF-8", []string{"snapshot", e.mnt, "bad\xff"}, "not valid UTF-8"},
		{"verify name not UTF-8", []string{"verify", "bad\xff"}, "not valid UTF-8"},
		{"restore name not UTF-8", []string{"restore", "bad\xff", rmnt}, "not valid UTF-8"},
		{"rm name not UTF-8", []string{"snapshots", "rm", "bad\xff"}, "not valid UTF-8"},
		{"empty state", []string{"--state", "", "snapshots"}, "state directory is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(t, append([]string{"--state", e.state}, c.args...)...)
			if code == 0 {
				t.Fatalf("exit 0, want failure; output: %s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("output %q does not say %q", out, c.want)
			}
			if strings.Contains(out, "Usage:") {
				t.Errorf("a runtime error prints the usage: %q", out)
			}
			if mounted(t, rmnt) {
				t.Error("something was mounted")
			}
		})
	}
	// Two snapshots racing for one name: exactly one wins.
	var outs [2]string
	var codes [2]int
	done := make(chan int, 2)
	for i := range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			b, err := exec.CommandContext(ctx, bin, "--state", e.state, "snapshot", e.mnt, "race").CombinedOutput()
			outs[i] = string(b)
			if ee, ok := err.(*exec.ExitError); ok {
				codes[i] = ee.ExitCode()
			} else if err != nil {
				codes[i] = -1
			}
			done <- i
		}()
	}
	<-done
	<-done
	if (codes[0] == 0) == (codes[1] == 0) {
		t.Errorf("two snapshots named race: exits %v, want one 0: %q", codes, outs)
	}
	for i := range 2 {
		if codes[i] != 0 && !strings.Contains(outs[i], "snapshot exists") {
			t.Errorf("losing snapshot said %q", outs[i])
		}
	}
	verifyOK(t, e.state, "race")
	cli(t, e.state, "snapshots", "rm", "race")

	if after := cli(t, e.state, "snapshots"); after != before {
		t.Errorf("snapshots changed:\nbefore:\n%safter:\n%s", before, after)
	}
	if _, err := os.Stat(filepath.Join(e.state, "x")); err == nil {
		t.Error(`"../x" made a file in the state directory`)
	}
	verifyOK(t, e.state, "s1")
	restoreAt(t, e.state, "s1", rmnt)
	if _, err := os.Stat(filepath.Join(rmnt, "after-s1")); err == nil {
		t.Error("the refused snapshot s1 replaced s1: it holds a file written later")
	}
	unmountCLI(t, rmnt)
	unmountCLI(t, e.mnt)
}

// writeRandom writes n random bytes to path.
func writeRandom(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

var gcRemoved = regexp.MustCompile(`removed (\d+)`)

func gcCount(t *testing.T, state string) int {
	t.Helper()
	out := cli(t, state, "gc", "--grace", "0s")
	m := gcRemoved.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("gc said %q", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestCheckpointGCKeepsMountedRestore removes the ref of a snapshot that is
// mounted as a restore and runs gc: the restore reads every byte still;
// after it is unmounted, gc removes the snapshot's objects.
func TestCheckpointGCKeepsMountedRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	os.MkdirAll(filepath.Join(e.mnt, "data"), 0o755)
	for i := range 3 {
		writeRandom(t, filepath.Join(e.mnt, "data", fmt.Sprint(i)), 3<<20+int64(i)*1000)
	}
	cli(t, e.state, "snapshot", e.mnt, "s")
	want := listing(t, e.mnt)
	unmountCLI(t, e.mnt)
	// Only the snapshot holds the data now.
	gcCount(t, e.state)

	r := restoreAt(t, e.state, "s", filepath.Join(t.TempDir(), "r"))
	cli(t, e.state, "snapshots", "rm", "s")
	if out := cli(t, e.state, "snapshots"); strings.Contains(out, "\ns ") {
		t.Errorf("s still listed after rm: %q", out)
	}
	if n := gcCount(t, e.state); n != 0 {
		t.Errorf("gc removed %d objects a mounted restore reaches", n)
	}
	// Nothing in the restore was read before the gc, so these reads go
	// to the objects.
	if d := diffListings(want, listing(t, r)); len(d) > 0 {
		t.Fatalf("restore after gc differs:\n%s", strings.Join(d, "\n"))
	}
	unmountCLI(t, r)
	if n := gcCount(t, e.state); n < 3*3 {
		t.Errorf("gc after unmounting the restore removed %d objects, want at least the 9 data chunks", n)
	}
	if n := gcCount(t, e.state); n != 0 {
		t.Errorf("a second gc removed %d more", n)
	}
}

// daemonPid finds the background mount process serving mnt.
func daemonPid(t *testing.T, mnt string) int {
	t.Helper()
	pid := 0
	eachProc(func(p int, args []string) {
		if len(args) >= 2 && args[0] == bin && slices.Contains(args, mnt) && slices.Contains(args, "--foreground") {
			pid = p
		}
	})
	if pid == 0 {
		t.Fatalf("no mount process for %s", mnt)
	}
	return pid
}

// eachProc calls fn with every process's pid and arguments.
func eachProc(fn func(pid int, args []string)) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		fn(pid, strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
	}
}

// countObjects counts the files in the object store.
func countObjects(state string) int {
	n := 0
	filepath.WalkDir(statedir.ObjectsDir(state), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// TestCheckpointCrashDuringSnapshot kills the mount process with SIGKILL
// while "cowfs snapshot" runs: afterwards the snapshot is either listed and
// verifies, or not listed at all.
func TestCheckpointCrashDuringSnapshot(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: kills a mount mid-snapshot of 200 MiB (runs without -short)")
	}
	e := newEnv(t)
	const files, size = 8, 25 << 20 // 200 MiB of new data in the upper
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	for i := range files {
		writeRandom(t, filepath.Join(e.mnt, fmt.Sprintf("big-%d", i)), size)
	}
	chunks := files * size >> 20

	// Kill at the first stored object, then (after mounting the same
	// upper again) halfway.
	for round, killAt := range []int{1, chunks / 2} {
		name := fmt.Sprintf("crash-%d", round)
		pid := daemonPid(t, e.mnt)
		t.Cleanup(func() {
			syscall.Kill(pid, syscall.SIGKILL)
			unix.Unmount(e.mnt, unix.MNT_DETACH)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		snap := exec.CommandContext(ctx, bin, "--state", e.state, "snapshot", e.mnt, name)
		var out strings.Builder
		snap.Stdout, snap.Stderr = &out, &out
		if err := snap.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- snap.Wait() }()
		killed := false
		deadline := time.Now().Add(60 * time.Second)
	poll:
		for time.Now().Before(deadline) {
			select {
			case <-done:
				break poll
			default:
			}
			if countObjects(e.state) >= killAt {
				syscall.Kill(pid, syscall.SIGKILL)
				killed = true
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if !killed {
			// The snapshot finished first: kill anyway, it must be whole.
			syscall.Kill(pid, syscall.SIGKILL)
		}
		unix.Unmount(e.mnt, unix.MNT_DETACH)
		var err error
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			cancel()
			t.Fatalf("snapshot did not return after its mount was killed")
		}
		cancel()
		t.Logf("round %d: killed during snapshot=%v, snapshot: %v %s", round, killed, err, out.String())

		list := cli(t, e.state, "snapshots")
		if strings.Contains(list, name+" ") {
			verifyOK(t, e.state, name)
		} else if err == nil {
			t.Errorf("snapshot %s reported success but is not listed:\n%s", name, list)
		}
		// Mount the same workspace again: it finds its upper.
		cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	}
	cli(t, e.state, "snapshot", e.mnt, "after")
	verifyOK(t, e.state, "after")
	for i := range files {
		fi, err := os.Stat(filepath.Join(e.mnt, fmt.Sprintf("big-%d", i)))
		if err != nil || fi.Size() != size {
			t.Errorf("big-%d after two crashes: %v", i, err)
		}
	}
	unmountCLI(t, e.mnt)

	// What the crashed snapshots left half-written is garbage a gc
	// removes.
	gcCount(t, e.state)
	tmps, _ := os.ReadDir(filepath.Join(statedir.ObjectsDir(e.state), "tmp"))
	if len(tmps) > 0 {
		var left []string
		for _, d := range tmps {
			fi, _ := d.Info()
			left = append(left, fmt.Sprintf("%s (%d bytes)", d.Name(), fi.Size()))
		}
		t.Errorf("gc --grace 0 leaves the half-written objects of a killed snapshot in objects/tmp for ever: %s", strings.Join(left, ", "))
	}
}

// TestCheckpointSnapshotOfRestore checkpoints a resumed crawl and removes
// the checkpoint it resumed from: the new snapshot does not depend on the
// removed one's ref, so it verifies and restores after a gc.
func TestCheckpointSnapshotOfRestore(t *testing.T) {
	t.Parallel()
	crawldb := buildCrawldb(t)
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	os.MkdirAll(filepath.Join(e.mnt, "data"), 0o755)
	writeRandom(t, filepath.Join(e.mnt, "data", "pages"), 3<<20)
	runCrawl(t, crawldb, filepath.Join(e.mnt, "db"), 50)
	cli(t, e.state, "snapshot", e.mnt, "s")
	unmountCLI(t, e.mnt)

	tmp := t.TempDir()
	r := restoreAt(t, e.state, "s", filepath.Join(tmp, "r"))
	n := runCrawl(t, crawldb, filepath.Join(r, "db"), 7)
	cli(t, e.state, "snapshot", r, "s-resumed")
	want := listing(t, r)
	unmountCLI(t, r)
	if out := cli(t, e.state, "snapshots"); !regexp.MustCompile(`(?m)^s-resumed\s+\S+ \S+\s+s\s`).MatchString(out) {
		t.Errorf("s-resumed is not listed with parent s:\n%s", out)
	}

	cli(t, e.state, "snapshots", "rm", "s")
	gcCount(t, e.state)
	verifyOK(t, e.state, "s-resumed")
	r2 := restoreAt(t, e.state, "s-resumed", filepath.Join(tmp, "r2"))
	if d := diffListings(want, listing(t, r2)); len(d) > 0 {
		t.Errorf("s-resumed after its parent's removal and gc differs:\n%s", strings.Join(d, "\n"))
	}
	if got := countRecords(t, crawldb, filepath.Join(r2, "db")); got != n+1+7 {
		t.Errorf("s-resumed recovers %d records, want %d", got, n+1+7)
	}
	unmountCLI(t, r2)
}

// TestCheckpointGCAfterRestoreCrash kills a restore's mount process: it can
// no longer use its snapshot, so once the snapshot's ref is removed a gc
// frees its objects.
func TestCheckpointGCAfterRestoreCrash(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	writeRandom(t, filepath.Join(e.mnt, "pages"), 4<<20)
	cli(t, e.state, "snapshot", e.mnt, "s")
	unmountCLI(t, e.mnt)
	gcCount(t, e.state)

	r := filepath.Join(t.TempDir(), "r")
	restoreAt(t, e.state, "s", r)
	pid := daemonPid(t, r)
	t.Cleanup(func() {
		syscall.Kill(pid, syscall.SIGKILL)
		unix.Unmount(r, unix.MNT_DETACH)
	})
	syscall.Kill(pid, syscall.SIGKILL)
	unix.Unmount(r, unix.MNT_DETACH)
	cli(t, e.state, "snapshots", "rm", "s")
	if n := gcCount(t, e.state); n < 4 {
		t.Errorf("a restore killed with SIGKILL leaves its pin (refs/.pins/restore-<key>) for ever, so gc keeps the snapshot's objects after its ref is removed (removed %d objects, want at least 4 chunks)", n)
	}
}

// TestCheckpointVerifyFindsDamage damages one stored chunk behind cowfs's
// back: verify exits non-zero and names the file, and the other snapshots
// still verify.
func TestCheckpointVerifyFindsDamage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	writeRandom(t, filepath.Join(e.mnt, "pages"), 1<<20)
	cli(t, e.state, "snapshot", e.mnt, "with-pages")
	os.Remove(filepath.Join(e.mnt, "pages"))
	cli(t, e.state, "snapshot", e.mnt, "without-pages")
	unmountCLI(t, e.mnt)

	// The one chunk object of "pages" is the only object of its size.
	var chunk string
	filepath.WalkDir(statedir.ObjectsDir(e.state), func(p string, d fs.DirEntry, err error) error {
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() && fi.Size() > 1<<20 && filepath.Base(filepath.Dir(p)) != "tmp" {
			chunk = p
		}
		return nil
	})
	if chunk == "" {
		t.Fatal("no chunk object of 1 MiB found")
	}
	b, err := os.ReadFile(chunk)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	os.Chmod(chunk, 0o644)
	if err := os.WriteFile(chunk, b, 0o444); err != nil {
		t.Fatal(err)
	}
	out, code := run(t, "--state", e.state, "verify", "with-pages")
	if code == 0 || !strings.Contains(out, "pages") || !strings.Contains(out, "BAD") {
		t.Errorf("verify of a damaged snapshot: exit %d: %q", code, out)
	}
	verifyOK(t, e.state, "without-pages")
}

// TestCheckpointSymlinkedMountpoint names one mount by its path and by a
// symlink to it: snapshot and unmount find the mount either way.
func TestCheckpointSymlinkedMountpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(e.mnt, link); err != nil {
		t.Fatal(err)
	}
	cli(t, e.state, "mount", e.mnt, "--lower", e.lower)
	out, code := run(t, "--state", e.state, "snapshot", link, "via-link")
	if code != 0 {
		unmountCLI(t, e.mnt)
		t.Fatalf("cowfs finds a mount by the path as typed, not the real mountpoint: "+
			"mounted at %s, \"cowfs snapshot %s\" (a symlink to it) fails: %s", e.mnt, link, strings.TrimSpace(out))
	}
	verifyOK(t, e.state, "via-link")
	unmountCLI(t, e.mnt)
}
