// Package redistest starts private redis-server processes for tests: each on its own
// unix socket in its own temp dir, so tests can kill, freeze and restart Redis and run
// in parallel without touching each other or the machine's own Redis.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process owned by a test.
type Server struct {
	t      testing.TB
	bin    string
	dir    string
	socket string
	args   []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited and been waited for
	err    error         // cmd.Wait's result, set before exited is closed
}

// Option adds redis-server arguments, e.g. AOF() or Args("--maxmemory", "10mb").
type Option func(*[]string)

// AOF turns on the append-only file with fsync on every write, so a killed server
// loses nothing it acknowledged.
func AOF() Option {
	return Args("--appendonly", "yes", "--appendfsync", "always")
}

// Args passes raw redis-server arguments.
func Args(a ...string) Option {
	return func(args *[]string) { *args = append(*args, a...) }
}

// lookPath finds redis-server once per test binary.
var lookPath = sync.OnceValues(func() (string, error) { return exec.LookPath("redis-server") })

// missingReported is set once a test has failed for want of redis-server.
var missingReported atomic.Bool

// Start runs a redis-server for the test and stops it when the test ends. A machine
// without redis-server fails the package, because a test that talks to Redis without a
// real Redis proves nothing: the first test to ask fails with the command that installs
// it, and the others that ask are skipped, so the one cause is not buried under a
// failure of every test.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts...)
	s.Restart()
	t.Cleanup(s.Kill)
	return s
}

// newServer prepares a server for the test, in its own temp dir, without starting it.
func newServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin, err := lookPath()
	if err != nil {
		if missingReported.CompareAndSwap(false, true) {
			t.Fatalf("redis-server not found on PATH: %v\n"+
				"Install it (with a C compiler for -race): scripts/deps.sh redis-server cc, which runs apt-get as root,\n"+
				"or yourself: sudo apt-get install -y redis-server gcc. scripts/test.sh does both and runs the tests.", err)
		}
		t.Skip("no redis-server: see the first failure")
	}
	// Unix socket paths are limited to ~104 bytes, and t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "rt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{t: t, dir: dir, socket: filepath.Join(dir, "redis.sock")}
	s.args = []string{
		"--port", "0",
		"--unixsocket", s.socket,
		"--unixsocketperm", "700",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--loglevel", "warning",
		"--logfile", filepath.Join(dir, "redis.log"),
	}
	for _, o := range opts {
		o(&s.args)
	}
	s.bin = bin
	return s
}

// URL is the REDIS_URL of the server.
func (s *Server) URL() string { return "unix://" + s.socket }

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	opt, err := redis.ParseURL(s.URL())
	if err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(opt)
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Restart starts the server (again) and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// start starts the server and waits until it answers PING; an error, with the server's
// log, when it exits first (a port taken meanwhile, say) or does not answer in time.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("redistest: Restart while the server is running")
	}
	os.Remove(s.socket)
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { s.err = cmd.Wait(); close(exited) }(s.exited)
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: s.socket, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		// NOAUTH: the server runs with --requirepass, and answers.
		if err == nil || strings.HasPrefix(err.Error(), "NOAUTH") {
			return nil
		}
		select {
		case <-s.exited:
			s.cmd = nil
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server exited at start (%v):\n%s", s.err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server did not answer PING: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a frozen process must be able to die
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Shutdown sends SIGTERM and waits for the process to exit: Redis's own clean
// shutdown, which flushes the AOF, as `redis-cli shutdown` or a service manager does.
// Restart starts it again on the same directory.
func (s *Server) Shutdown() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("redistest: Shutdown of a server that is not running")
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Fatalf("signal SIGTERM: %v", err)
	}
	select {
	case <-s.exited:
		s.cmd = nil
		if err := s.err; err != nil {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server exited with %v after SIGTERM\n%s", err, log)
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
		s.t.Fatal("redis-server did not exit within 30s of SIGTERM; killed it")
	}
}

// RewriteAOF rewrites the append-only file now (BGREWRITEAOF) and waits until the
// rewrite has finished, as Redis does by itself once the file has doubled in size
// (auto-aof-rewrite-percentage). The server must run with --appendonly yes.
func (s *Server) RewriteAOF() {
	s.t.Helper()
	c := s.Client()
	ctx := context.Background()
	if err := c.BgRewriteAOF(ctx).Err(); err != nil {
		s.t.Fatalf("BGREWRITEAOF: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := c.Info(ctx, "persistence").Result()
		if err != nil {
			s.t.Fatalf("INFO persistence: %v", err)
		}
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") {
			if !strings.Contains(info, "aof_last_bgrewrite_status:ok") {
				s.t.Fatalf("AOF rewrite failed:\n%s", info)
			}
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("AOF rewrite not finished after 60s:\n%s", info)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop sends SIGSTOP: the server holds its connections but answers nothing.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont sends SIGCONT after Stop.
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatalf("redistest: %v to a server that is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
}

// Namespace returns a namespace unique to the test, for REDIS_NAMESPACE, so tests that
// share a server never see each other's keys.
func Namespace(t testing.TB) string {
	r := strings.NewReplacer("/", "-", " ", "-", "#", "-")
	return fmt.Sprintf("t-%s-%d", r.Replace(t.Name()), time.Now().UnixNano()%1_000_000)
}
