// Package proctest holds helpers for tests that run the microshop binary as
// real OS processes: building the binary once for a test binary, starting
// processes with their output captured, stopping them (SIGTERM, then
// SIGKILL) with checks of how they ended, free loopback ports, waiting for a
// listener, and a Redis a test alone uses.
package proctest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Run is the body of a TestMain: it builds ./cmd/microshop of the module
// into a temporary directory (with -race when the tests run with -race),
// stores its path in *binary, runs the tests and returns their exit code.
// With -short nothing is built: end-to-end tests skip themselves then.
func Run(m *testing.M, binary *string) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "proctest:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "microshop-proctest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "proctest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = filepath.Join(dir, "microshop")
	args := []string{"build", "-o", *binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/microshop")
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: go %s (in %s): %v\n%s", strings.Join(args, " "), root, err, out)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "proctest: built %s (race=%v) in %v\n", *binary, raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// moduleRoot finds the directory of go.mod: `go env GOMOD`, else the
// nearest parent directory holding a go.mod.
func moduleRoot() (string, error) {
	if out, err := exec.Command(goTool(), "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the module root (no go.mod above the working directory)")
		}
		dir = parent
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}
