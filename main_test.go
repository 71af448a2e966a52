package cowfs_test

import (
	"os"
	"testing"

	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}
