package cowfs_test

import (
	"os"
	"testing"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func TestMain(m *testing.M) {
	// The bucket tests name their server's endpoint and run in parallel.
	s3test.SetCredentialEnv()
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}
