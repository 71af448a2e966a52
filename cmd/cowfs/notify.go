package main

import (
	"log/slog"

	"github.com/coreos/go-systemd/v22/daemon"
)

// sdNotify tells the service manager that started this process (systemd
// with Type=notify: $NOTIFY_SOCKET) of state, daemon.SdNotifyReady or
// daemon.SdNotifyStopping; without a manager it does nothing. A notice
// that cannot be sent is logged, not fatal: the workspace serves either
// way, and systemd says itself when READY=1 never came.
func sdNotify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("tell the service manager", "state", state, "err", err)
	}
}
