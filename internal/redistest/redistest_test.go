package redistest_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/clickstream/pipeline/internal/redistest"
)

// On a machine without redis-server, a test binary reports it once, with the command
// that installs it, instead of failing every test that needs Redis with the same error.
// The test runs its own binary again with an empty PATH; in there, helperEnv is set and
// three tests ask for a server.
func TestMissingRedisServerReportedOnce(t *testing.T) {
	if os.Getenv(helperEnv) == "1" {
		for _, name := range []string{"a", "b", "c"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				redistest.Start(t)
				t.Error("Start returned without a redis-server")
			})
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingRedisServerReportedOnce$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the test binary without redis-server: %v, want it to fail\n%s", err, out)
	}
	if n := strings.Count(string(out), "redis-server not found on PATH"); n != 1 {
		t.Errorf("the missing redis-server is reported %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(string(out), "apt-get install -y redis-server") {
		t.Errorf("the report does not say how to install it:\n%s", out)
	}
	if strings.Contains(string(out), "without a redis-server") {
		t.Errorf("a test went on without a redis-server:\n%s", out)
	}
}

const helperEnv = "REDISTEST_HELPER"
