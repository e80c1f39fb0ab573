package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// build holds the service binaries, built once per run of the test binary.
var build struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// binaries builds ingest, processor and queryapi with the go on PATH and returns the
// directory that holds them. They are built without -race even when the test is: they
// are the system under test, and the race detector would only slow them down.
func binaries(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			build.err = err
			return
		}
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
			build.err = fmt.Errorf("module root not found above the e2e package: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "e2e-bin")
		if err != nil {
			build.err = err
			return
		}
		build.dir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./ingest", "./processor", "./queryapi")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.dir
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// process is one service running as a real OS process, its stdout and stderr in a file.
type process struct {
	name string
	addr string // its HTTP address
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once it has exited and been waited for
	err  error         // Wait's result, set before done is closed
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) signal(sig syscall.Signal) error {
	if p.exited() {
		return fmt.Errorf("%s: already exited: %v", p.name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// kill sends SIGKILL (which also ends a stopped process) and waits for the exit.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits up to grace for a graceful exit, then SIGKILL.
func (p *process) stop(grace time.Duration) (graceful bool) {
	if p.exited() {
		return false
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process could not act on SIGTERM
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		p.kill()
		return false
	}
}

// fleet starts the services and stops every one of them when the test ends: SIGTERM,
// a grace period, then SIGKILL. A service that does not exit cleanly on SIGTERM fails
// the test; when the test failed, every service's log is dumped.
type fleet struct {
	t      *testing.T
	bin    string
	logDir string

	mu    sync.Mutex
	procs []*process
}

func newFleet(t *testing.T) *fleet {
	f := &fleet{t: t, bin: binaries(t), logDir: t.TempDir()}
	t.Cleanup(f.stopAll)
	return f
}

// start runs binary bin (ingest, processor or queryapi) as name with exactly env as its
// environment, and returns once it answers 200 on /readyz at addr. It may be called
// from any goroutine.
func (f *fleet) start(ctx context.Context, name, bin, addr string, env ...string) (*process, error) {
	logPath := filepath.Join(f.logDir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(filepath.Join(f.bin, bin))
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	if err := waitReady(ctx, p); err != nil {
		return p, err
	}
	return p, nil
}

// waitReady polls the process's /readyz until it answers 200, it exits, or 20s pass.
func waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + p.addr + "/readyz"
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready: %v", p.name, p.err)
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", p.name, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *fleet) stopAll() {
	f.mu.Lock()
	procs := append([]*process(nil), f.procs...)
	f.mu.Unlock()
	// All at once: each waits for its own in-flight work, not for the others.
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.exited() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !p.stop(10 * time.Second) {
				f.t.Errorf("%s did not exit within 10s of SIGTERM; killed", p.name)
			} else if p.err != nil {
				f.t.Errorf("%s exited with %v after SIGTERM, want a clean exit", p.name, p.err)
			}
		}()
	}
	wg.Wait()
	if f.t.Failed() {
		for _, p := range procs {
			f.t.Logf("----- %s (%s, exit: %v) -----\n%s", p.name, p.addr, p.err, tail(p.log, 64<<10))
		}
	}
}

// tail returns up to the last n bytes of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		return "[…]\n" + string(b)
	}
	return string(b)
}
