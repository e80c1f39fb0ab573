// Package proctest runs the pipeline's service binaries as real OS processes, for the
// tests and programs whose point is process behaviour (SIGKILL, SIGTERM, memory): it
// builds the binaries, starts them with an exact environment and waits until they are
// ready, signals and stops them (SIGTERM, then SIGKILL), and reads what a soak watches:
// resident memory and goroutine counts.
//
// The core (Build, Fleet, Process) needs no testing.T, so that scripts/soak can use it;
// Binaries and NewFleet wire it into a test.
package proctest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Services are the module's service packages, which Build compiles.
var Services = []string{"ingest", "processor", "queryapi"}

// Build compiles the services with the go on PATH into dir, one binary per service
// named after it. They are built without -race even when the caller runs with it: they
// are the system under test, and the race detector would only slow them down.
func Build(dir string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range Services {
		args = append(args, "./"+s)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ModuleRoot returns the directory of the go.mod that encloses the working directory.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Process is one program running as an OS process, its stdout and stderr in a file.
type Process struct {
	Name string // a name for logs and errors, e.g. "proc-a-3"
	Addr string // its HTTP address, "" for a program without one
	Log  string // the file that holds its output

	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited and been waited for
	err  error         // Wait's result, set before done is closed
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for exit status 0); only meaningful once Exited.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Signal sends sig, failing if the process has already exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s: already exited: %v", p.Name, p.err)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (which also ends a stopped process) and waits for the exit.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then kills it. It
// reports whether the process exited on its own after SIGTERM; a process that had
// exited before counts as not graceful.
func (p *Process) Stop(grace time.Duration) (graceful bool) {
	if p.Exited() {
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
		p.Kill()
		return false
	}
}

// RSS returns the process's resident set size (VmRSS in /proc/<pid>/status) in bytes.
func (p *Process) RSS() (int64, error) {
	return RSS(p.Pid())
}

// RSS returns the resident set size (VmRSS) of process pid, in bytes. Linux only.
func RSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: VmRSS %q: %w", pid, v, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc status (exited?)", pid)
}

// Goroutines asks a service's profiler (DEBUG_ADDR) how many goroutines it runs: the
// first line of /debug/pprof/goroutine?debug=1 is "goroutine profile: total N".
func Goroutines(ctx context.Context, debugAddr string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+debugAddr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil && line == "" {
		return 0, fmt.Errorf("goroutine profile from %s: %w", debugAddr, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile from %s starts %q", debugAddr, line)
	}
	return strconv.Atoi(v)
}

// Fleet starts processes and keeps track of them, so that all of them can be stopped
// at the end whatever happened in between.
type Fleet struct {
	bin    string // directory of the service binaries
	logDir string

	mu    sync.Mutex
	procs []*Process
}

// NewFleet returns a fleet that runs the binaries in bin and writes logs to logDir.
func NewFleet(bin, logDir string) *Fleet {
	return &Fleet{bin: bin, logDir: logDir}
}

// Start runs service binary bin (ingest, processor or queryapi) as name with exactly
// env as its environment, and returns once it answers 200 on /readyz at addr. It may be
// called from any goroutine. On error the process may still be running; StopAll ends it.
func (f *Fleet) Start(ctx context.Context, name, bin, addr string, env ...string) (*Process, error) {
	p, err := f.Exec(name, filepath.Join(f.bin, bin), nil, env)
	if err != nil {
		return nil, err
	}
	p.Addr = addr
	if err := WaitReady(ctx, p, "http://"+addr+"/readyz"); err != nil {
		return p, err
	}
	return p, nil
}

// Exec runs any program (say, redis-server) as name, without a readiness check.
func (f *Fleet) Exec(name, path string, args, env []string) (*Process, error) {
	logPath := filepath.Join(f.logDir, name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child has its own descriptor
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p, nil
}

// WaitReady polls url until it answers 200, the process exits, or 20 s pass.
func WaitReady(ctx context.Context, p *Process, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var last error
	for {
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready: %v\n%s", p.Name, p.err, Tail(p.Log, 4<<10))
		}
		resp, err := client.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)", p.Name, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Processes returns every process the fleet started, in start order.
func (f *Fleet) Processes() []*Process {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Process(nil), f.procs...)
}

// StopAll stops every process still running, all at once: SIGTERM, up to grace to
// exit, then SIGKILL. The error names each process that had to be killed or exited
// with a failure after SIGTERM.
func (f *Fleet) StopAll(grace time.Duration) error {
	return Stop(grace, f.Processes()...)
}

// Stop stops the processes of procs that are still running, as StopAll does.
func Stop(grace time.Duration, procs ...*Process) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		if p.Exited() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if !p.Stop(grace) {
				err = fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, grace)
			} else if p.err != nil {
				err = fmt.Errorf("%s exited with %v after SIGTERM, want a clean exit", p.Name, p.err)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Logs returns the end of every process's log, up to n bytes each, with a header per
// process.
func (f *Fleet) Logs(n int) string {
	var b strings.Builder
	for _, p := range f.Processes() {
		exit := "running"
		if p.Exited() {
			exit = fmt.Sprintf("exit: %v", p.err)
		}
		fmt.Fprintf(&b, "----- %s (%s, %s) -----\n%s\n", p.Name, p.Addr, exit, Tail(p.Log, n))
	}
	return b.String()
}

// Tail returns up to the last n bytes of the file at path, from a line start.
func Tail(path string, n int) string {
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

// KillHolding kills p with SIGKILL at a moment when it holds work, and returns what
// holding reported then. A SIGKILL at a random instant would mostly hit a processor
// idle in a blocking read, holding nothing, and prove nothing; so p is frozen
// (SIGSTOP) first, and killed as soon as holding (say, the entries Redis has delivered
// to it and not seen acked) reports more than zero. If that does not happen within
// about 50 short freezes, p is killed anyway and 0 is returned.
func KillHolding(p *Process, holding func() int64) (int64, error) {
	var n int64
	for range 50 {
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			return 0, err
		}
		for range 25 {
			if n = holding(); n > 0 {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if n > 0 {
			break
		}
		p.Signal(syscall.SIGCONT)
		time.Sleep(5 * time.Millisecond)
	}
	p.Kill()
	return n, nil
}

// Pending returns how many entries the group has delivered to consumer and not seen
// acked (0 when Redis cannot tell): what KillHolding's holding usually reports.
func Pending(ctx context.Context, rdb *redis.Client, stream, group, consumer string) int64 {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cs, err := rdb.XInfoConsumers(ctx, stream, group).Result()
	if err != nil {
		return 0
	}
	for _, c := range cs {
		if c.Name == consumer {
			return c.Pending
		}
	}
	return 0
}
