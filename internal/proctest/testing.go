package proctest

import (
	"os"
	"sync"
	"testing"
	"time"
)

// build holds the service binaries, built once per test binary.
var build struct {
	once sync.Once
	dir  string
	err  error
}

// Main runs a package's tests and then removes the binaries Binaries built. Call it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Binaries builds the services once per test binary (see Build) and returns their
// directory. The package's TestMain must call Main, which removes them.
func Binaries(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "proctest-bin")
		if build.err == nil {
			build.err = Build(build.dir)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.dir
}

// StopGrace is how long a service gets to exit after SIGTERM when a test ends.
const StopGrace = 10 * time.Second

// NewTestFleet returns a fleet of the service binaries whose processes are all stopped
// when the test ends (SIGTERM, StopGrace, SIGKILL), even when it fails. A service that
// does not exit cleanly on SIGTERM fails the test; when the test failed, every
// process's log is printed.
func NewTestFleet(t testing.TB) *Fleet {
	t.Helper()
	f := NewFleet(Binaries(t), t.TempDir())
	t.Cleanup(func() {
		if err := f.StopAll(StopGrace); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Log(f.Logs(64 << 10))
		}
	})
	return f
}
