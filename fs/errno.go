package fs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"

	"github.com/cowfs/cowfs/cow"
)

// toErrno maps an error from package cow to the errno the kernel returns.
// It is the only place errors cross the kernel boundary. An error that
// carries no errno is a cowfs fault: it is logged with the operation and
// path, and the caller gets EIO, never silence.
func toErrno(ctx context.Context, log *slog.Logger, op string, p cow.Path, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	if errors.Is(err, os.ErrNotExist) {
		return syscall.ENOENT
	}
	log.ErrorContext(ctx, "operation failed", "op", op, "path", p.Rel(), "err", err)
	return syscall.EIO
}
