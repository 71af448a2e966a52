package fs_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	cowlower "github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/fs"
)

// fs serves a lower its caller opened beneath an upper its caller chose: the
// task writes freely, and the spider's own copy never changes. A task
// runner written in Go opens workspaces with cowfs.Open, which does this
// with every check, pin and default (see the root package's ExampleOpen).
func ExampleNew() {
	base, err := os.MkdirTemp("", "cowfs-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(base)
	spider := filepath.Join(base, "spider")
	workspace := filepath.Join(base, "workspace")
	os.MkdirAll(filepath.Join(spider, "crawlab_project", "spiders"), 0o755)
	os.WriteFile(filepath.Join(spider, "crawlab_project", "spiders", "quotes.py"), []byte("# spider\n"), 0o644)
	os.Mkdir(workspace, 0o755)

	lower, err := cowlower.OpenDir(spider)
	if err != nil {
		log.Fatal(err)
	}
	defer lower.Close()
	m, err := fs.New(workspace, fs.Options{Lower: lower, Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Unmount()

	// The task appends to the spider's file and writes its results.
	f, _ := os.OpenFile(filepath.Join(workspace, "crawlab_project", "spiders", "quotes.py"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("# run 1\n")
	f.Close()
	os.WriteFile(filepath.Join(workspace, "results.json"), []byte("[]"), 0o644)

	inWorkspace, _ := os.ReadFile(filepath.Join(workspace, "crawlab_project", "spiders", "quotes.py"))
	inSpider, _ := os.ReadFile(filepath.Join(spider, "crawlab_project", "spiders", "quotes.py"))
	fmt.Printf("workspace: %q\nspider:    %q\n", inWorkspace, inSpider)
	// Output:
	// workspace: "# spider\n# run 1\n"
	// spider:    "# spider\n"
}
