// Command benchtool is the metadata half of scripts/bench: it builds the
// lower tree and times walks, stats and create/stat/unlink in a directory,
// printing one "name value" line per figure (ops per second).
//
//	benchtool mktree DIR N      N small files in DIR, 100 per subdirectory
//	benchtool walk DIR          readdir + lstat of every entry under DIR
//	benchtool stat DIR          lstat of every path under DIR (listed first, untimed)
//	benchtool files DIR N       create, then lstat, then list (one readdir of the
//	                            whole directory), then unlink N files in DIR/bench-files
//	benchtool readdir DIR       one readdir of DIR, names only, as ls(1) without -l
//	benchtool gap FILE          append a 64-byte record to FILE every millisecond
//	                            until SIGTERM or SIGINT, then print the longest
//	                            gap between two appends (gap_ms), when it ended
//	                            (gap_end_unix_ns) and how many appends
//	benchtool mounttime MNT CMD [ARG...]
//	                            start CMD and print how long until MNT is a
//	                            FUSE mount that answers (serve_ms); with
//	                            MOUNTTIME_EXIT=1 also until CMD exited (exit_ms,
//	                            a mount command that returns once it serves);
//	                            else CMD is left running (a foreground mount)
//	benchtool delay LISTEN TARGET RTT [MBIT]
//	                            forward TCP from LISTEN (host:port) to TARGET,
//	                            each direction's bytes held half of RTT (e.g.
//	                            2ms) on the way: a round trip RTT longer; with
//	                            MBIT, each direction a link of MBIT Mbit/s;
//	                            prints "ready" once it listens, serves until
//	                            killed
//
// Only the standard library, so `go build ./scripts/benchtool` needs nothing.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	dir := os.Args[2]
	var err error
	switch os.Args[1] {
	case "mktree":
		err = mktree(dir, atoi(3))
	case "walk":
		err = walkCmd(dir)
	case "stat":
		err = statCmd(dir)
	case "files":
		err = filesCmd(dir, atoi(3))
	case "readdir":
		err = readdirCmd(dir)
	case "gap":
		err = gapCmd(dir)
	case "mounttime":
		if len(os.Args) < 4 {
			usage()
		}
		err = mounttimeCmd(dir, os.Args[3:])
	case "delay":
		if len(os.Args) < 5 {
			usage()
		}
		rtt, perr := time.ParseDuration(os.Args[4])
		if perr != nil || rtt < 0 {
			usage()
		}
		var mbit float64
		if len(os.Args) > 5 {
			if mbit, perr = strconv.ParseFloat(os.Args[5], 64); perr != nil || mbit < 0 {
				usage()
			}
		}
		err = delayCmd(dir, os.Args[3], rtt/2, mbit*1e6/8)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool mktree DIR N | walk DIR | stat DIR | files DIR N | readdir DIR | gap FILE | mounttime MNT CMD [ARG...] | delay LISTEN TARGET RTT [MBIT]")
	os.Exit(2)
}

func atoi(i int) int {
	if len(os.Args) <= i {
		usage()
	}
	n, err := strconv.Atoi(os.Args[i])
	if err != nil || n <= 0 {
		usage()
	}
	return n
}

func rate(name string, n int, d time.Duration) {
	fmt.Printf("%s %.0f\n", name, float64(n)/d.Seconds())
}

// mktree writes n files of 1 KiB in subdirectories of 100.
func mktree(dir string, n int) error {
	buf := make([]byte, 1024)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d.txt", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// walk reads every directory under dir and lstats every entry it finds,
// as find(1) or a build tool scanning a tree does. It returns the number of
// entries lstat'd and, when paths is not nil, appends their paths.
func walk(dir string, paths *[]string) (int, error) {
	n := 0
	var rec func(string) error
	rec = func(d string) error {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		for _, name := range names {
			p := d + "/" + name
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			n++
			if paths != nil {
				*paths = append(*paths, p)
			}
			if fi.IsDir() {
				if err := rec(p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return n, rec(dir)
}

func walkCmd(dir string) error {
	t0 := time.Now()
	n, err := walk(dir, nil)
	if err != nil {
		return err
	}
	rate("walk_ops", n, time.Since(t0))
	return nil
}

// statCmd lstats every path under dir, in passes, for at least half a second.
func statCmd(dir string) error {
	var paths []string
	if _, err := walk(dir, &paths); err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("%s is empty", dir)
	}
	n := 0
	t0 := time.Now()
	for time.Since(t0) < 500*time.Millisecond {
		for _, p := range paths {
			if _, err := os.Lstat(p); err != nil {
				return err
			}
		}
		n += len(paths)
	}
	rate("stat_ops", n, time.Since(t0))
	return nil
}

// filesCmd creates n empty files (open O_CREAT|O_EXCL, close), lstats them,
// lists their directory, then unlinks them, timing each phase.
func filesCmd(dir string, n int) error {
	d := filepath.Join(dir, "bench-files")
	if err := os.Mkdir(d, 0o755); err != nil {
		return err
	}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = fmt.Sprintf("%s/n%05d", d, i)
	}
	t0 := time.Now()
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	rate("create_ops", n, time.Since(t0))
	t0 = time.Now()
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			return err
		}
	}
	rate("newstat_ops", n, time.Since(t0))
	t0 = time.Now()
	k, err := readdir(d)
	if err != nil {
		return err
	}
	if k != n {
		return fmt.Errorf("%s: listed %d entries, made %d", d, k, n)
	}
	rate("readdir_ops", n, time.Since(t0))
	t0 = time.Now()
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	rate("unlink_ops", n, time.Since(t0))
	return os.Remove(d)
}

// readdir opens dir and reads all its names, as ls(1) or a crawler looking
// for its next input does, and returns how many there were.
func readdir(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	return len(names), err
}

// readdirCmd times one listing of dir.
func readdirCmd(dir string) error {
	t0 := time.Now()
	n, err := readdir(dir)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s is empty", dir)
	}
	rate("readdir_ops", n, time.Since(t0))
	return nil
}

// gapCmd appends small records to file, each its own write(2), a
// millisecond apart (a logging crawler, not a busy loop that would take a
// core from what it measures), until told to stop, and prints the longest time between the ends of two appends: how
// long a writer was held up. It prints "ready" once its first append is
// done, so that a script starts what it measures only then.
func gapCmd(file string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	rec := []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n")
	var maxGap time.Duration
	var maxAt time.Time
	n := 0
	last := time.Now()
	for {
		select {
		case <-stop:
			fmt.Printf("gap_ms %.1f\ngap_end_unix_ns %d\nappends %d\n", float64(maxGap)/float64(time.Millisecond), maxAt.UnixNano(), n)
			return nil
		default:
		}
		if _, err := f.Write(rec); err != nil {
			return err
		}
		now := time.Now()
		if n == 0 {
			fmt.Println("ready")
		} else if g := now.Sub(last); g > maxGap {
			maxGap, maxAt = g, now
		}
		last = now
		n++
		time.Sleep(time.Millisecond)
	}
}

// fuseMagic is f_type of a FUSE mount in statfs(2).
const fuseMagic = 0x65735546

// mounttimeCmd starts argv and polls mnt every 200 µs until a statfs of
// it reports a FUSE mount: the kernel answers that statfs from the
// daemon (FUSE_STATFS), so it succeeds only once the mount serves.
// Polling at that rate costs little CPU beside what it measures, and
// resolves well below the milliseconds measured.
func mounttimeCmd(mnt string, argv []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	var exitedAt time.Time
	go func() {
		err := cmd.Wait()
		exitedAt = time.Now()
		exited <- err
	}()
	deadline := start.Add(60 * time.Second)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err == nil && st.Type == fuseMagic {
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited before %s served: %v", argv[0], mnt, err)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return fmt.Errorf("%s did not serve within 60 s", mnt)
		}
		time.Sleep(200 * time.Microsecond)
	}
	served := time.Since(start)
	fmt.Printf("serve_ms %.1f\n", float64(served)/float64(time.Millisecond))
	if os.Getenv("MOUNTTIME_EXIT") != "1" {
		// A foreground mount: it serves until unmounted.
		return cmd.Process.Release()
	}
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("%s: %v", argv[0], err)
		}
		fmt.Printf("exit_ms %.1f\n", float64(exitedAt.Sub(start))/float64(time.Millisecond))
	case <-time.After(60 * time.Second):
		return fmt.Errorf("%s served but did not exit within 60 s", argv[0])
	}
	return nil
}
