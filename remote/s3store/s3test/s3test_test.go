package s3test

import (
	"os"
	"testing"
)

// A stopped server leaves none of the unix sockets weed made in /tmp for
// its gRPC services: a run of the tests started hundreds.
func TestStopRemovesSockets(t *testing.T) {
	s := Run(t)
	paths := grpcSockets(s.ports)
	if len(s.sockets) == 0 {
		t.Fatalf("none of %q made; want weed's sockets noted", paths)
	}
	s.Stop()
	for _, p := range paths {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s after Stop: %v; want it gone", p, err)
		}
	}
}
