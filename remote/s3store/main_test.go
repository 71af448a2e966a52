package s3store_test

import (
	"os"
	"testing"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func TestMain(m *testing.M) {
	// Tests that name their server's endpoint need no t.Setenv, which
	// t.Parallel forbids.
	s3test.SetCredentialEnv()
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}
