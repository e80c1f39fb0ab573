package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clickstream/pipeline/internal/proctest"
)

// The tests below run scripts/run.sh as a new user would, started in the background by
// a non-interactive shell (`scripts/run.sh &`), which starts it with SIGINT ignored.

// A processor killed with SIGKILL is restarted, says so, and the pipeline goes on
// counting, exactly; SIGTERM then stops everything.
func TestRunScriptRestartsAKilledProcessor(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: runs scripts/run.sh")
	}
	r := startRunScript(t, "PROCESSORS=2")
	r.waitOutput("Pipeline is running")
	// It says where the dashboard is, and the dashboard is there.
	r.waitOutput("dashboard  " + r.query + "/\n")
	if status := httpStatus(t, r.query+"/"); status != http.StatusOK {
		t.Errorf("the dashboard at %s/: %d, want 200", r.query, status)
	}
	// And where the demo shop is: product pages with the tracker, linking to the dashboard.
	r.waitOutput("demo shop  " + r.ingest + "/demo/ ")
	if body := httpBody(t, r.ingest+"/demo/p/sku-1"); !strings.Contains(body, `src="`+r.ingest+`/t.js"`) || !strings.Contains(body, `href="`+r.query+`/products/sku-1"`) {
		t.Errorf("the demo shop's product page has no tracker or no link to the dashboard:\n%s", body)
	}
	r.postClick("e1")
	r.waitClicks(1)

	victim := r.service("processor", "CONSUMER_NAME=local-1")
	other := r.service("processor", "CONSUMER_NAME=local-2")
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitOutput(fmt.Sprintf("processor-1 (pid %d) exited (killed by SIGKILL); restarting it", victim))
	m := r.waitOutputMatch(regexp.MustCompile(`processor-1 restarted \(pid (\d+)\)`))
	restarted, _ := strconv.Atoi(m[1])
	if now := r.service("processor", "CONSUMER_NAME=local-1"); now != restarted || restarted == victim {
		t.Fatalf("processor local-1 runs as pid %d; run.sh says %d, the killed one was %d", now, restarted, victim)
	}
	if now := r.service("processor", "CONSUMER_NAME=local-2"); now != other {
		t.Errorf("processor local-2 is pid %d, was %d: only the killed processor may be restarted", now, other)
	}
	if status := httpStatus(t, "http://"+r.procAddr+"/readyz"); status != http.StatusOK {
		t.Errorf("restarted processor's /readyz: %d, want 200", status)
	}
	r.postClick("e1") // a retry: not counted again
	r.postClick("e2")
	r.waitClicks(2)

	procs := r.processes()
	if err := syscall.Kill(r.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r.waitExit(143, procs)
}

// SIGINT stops run.sh started in the background, and nothing it started is left.
func TestRunScriptStopsOnSIGINTInTheBackground(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: runs scripts/run.sh")
	}
	r := startRunScript(t)
	r.waitOutput("Pipeline is running")
	procs := r.processes()
	for _, name := range []string{"redis-server", "ingest", "processor", "queryapi"} {
		found := false
		for _, p := range procs {
			found = found || p.name == name
		}
		if !found {
			t.Fatalf("no %s among run.sh's processes %v", name, procs)
		}
	}
	if err := syscall.Kill(r.pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	r.waitExit(130, procs)
}

// runScript is one scripts/run.sh, started as `scripts/run.sh >log 2>&1 &` by a
// non-interactive bash.
type runScript struct {
	t        *testing.T
	cmd      *exec.Cmd // the wrapping bash
	pid      int       // run.sh
	exited   chan struct{}
	exitErr  error
	log      string // run.sh's stdout and stderr
	dataDir  string
	ingest   string // base URLs
	query    string
	procAddr string // processor-1's address
}

// startRunScript starts run.sh on free ports with its data in a temp dir; env adds
// variables. Whatever the test's outcome, everything run.sh started is gone when the
// test ends.
func startRunScript(t *testing.T, env ...string) *runScript {
	t.Helper()
	return startRunScriptArgs(t, nil, env...)
}

// startRunScriptArgs is startRunScript with arguments for run.sh (--cluster).
func startRunScriptArgs(t *testing.T, args []string, env ...string) *runScript {
	t.Helper()
	root, err := proctest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ingestAddr, queryAddr := freePorts(t, 1), freePorts(t, 1)
	procAddr := freePorts(t, 2) // processor-2, if any, listens on the next port
	// Redis's unix socket must fit in ~100 bytes: a short temp dir.
	dataDir, err := os.MkdirTemp("", "runsh")
	if err != nil {
		t.Fatal(err)
	}
	r := &runScript{t: t, log: filepath.Join(dataDir, "run.log"), dataDir: dataDir, exited: make(chan struct{}),
		ingest: "http://" + ingestAddr, query: "http://" + queryAddr, procAddr: procAddr}
	cmd := exec.Command("bash", append([]string{"-c", `"$0" "${@:2}" >"$1" 2>&1 & echo $!; wait $!`, filepath.Join(root, "scripts", "run.sh"), r.log}, args...)...)
	for _, kv := range os.Environ() {
		// The test's own settings for the pipeline, if any, are not run.sh's.
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "REDIS_URL", "REDIS_NAMESPACE", "CONSUMER_NAME", "PROCESSORS", "INGEST_KEYS", "QUERY_KEYS", "DEMO", "DEMO_DASHBOARD_URL", "CORS_ORIGINS":
		default:
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "INGEST_ADDR="+ingestAddr, "QUERY_ADDR="+queryAddr, "PROCESSOR_ADDR="+procAddr,
		"DATA_DIR="+filepath.Join(dataDir, "data"), "READ_BLOCK=100ms")
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that cleanup can reach every process
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd = cmd
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the pid of run.sh: %q: %v", line, err)
	}
	if r.pid, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
		t.Fatalf("the pid of run.sh: %q: %v", line, err)
	}
	go func() {
		io.Copy(io.Discard, stdout)
		r.exitErr = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			syscall.Kill(r.pid, syscall.SIGTERM)
			select {
			case <-r.exited:
			case <-time.After(60 * time.Second):
			}
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-r.exited
		}
		// Redis runs in a session of its own; run.sh stops it, unless run.sh failed.
		for _, pid := range redisPids(dataDir) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			out, _ := os.ReadFile(r.log)
			t.Logf("run.sh output:\n%s", out)
			for _, name := range []string{"ingest", "processor-1", "processor-2", "queryapi"} {
				t.Logf("%s.log:\n%s", name, proctest.Tail(filepath.Join(dataDir, "data", "logs", name+".log"), 20))
			}
		}
		os.RemoveAll(dataDir)
	})
	return r
}

// output returns what run.sh has printed so far.
func (r *runScript) output() string {
	b, _ := os.ReadFile(r.log)
	return string(b)
}

// waitOutput waits until run.sh has printed s; run.sh exiting first fails the test.
func (r *runScript) waitOutput(s string) {
	r.t.Helper()
	r.waitFor("run.sh to print "+strconv.Quote(s), func() bool { return strings.Contains(r.output(), s) })
}

func (r *runScript) waitOutputMatch(re *regexp.Regexp) []string {
	r.t.Helper()
	var m []string
	r.waitFor("run.sh to print "+re.String(), func() bool {
		m = re.FindStringSubmatch(r.output())
		return m != nil
	})
	return m
}

// waitFor polls cond until it holds; the deadline only bounds a hung run.
func (r *runScript) waitFor(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		select {
		case <-r.exited:
			if cond() {
				return
			}
			r.t.Fatalf("run.sh exited (%v) while waiting for %s", r.exitErr, what)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func (r *runScript) postClick(eventID string) {
	r.t.Helper()
	body := `{"user_id":"u1","product_id":"p1","event_id":"` + eventID + `"}`
	resp, err := http.Post(r.ingest+"/v1/events", "application/json", strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("POST %s: %d, want 202", body, resp.StatusCode)
	}
}

// waitClicks waits until queryapi counts n clicks for u1, and fails if it counts more.
func (r *runScript) waitClicks(n int) {
	r.t.Helper()
	got := ""
	r.waitFor("u1's clicks to reach "+strconv.Itoa(n), func() bool {
		resp, err := http.Get(r.query + "/user/u1/clicks")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got = strings.TrimSpace(string(b))
		c, err := strconv.Atoi(got)
		if err == nil && c > n {
			r.t.Fatalf("u1 has %d clicks, want %d", c, n)
		}
		return err == nil && c == n
	})
}

// waitExit waits until run.sh and the shell around it have exited, checks run.sh's
// status, and that none of procs (everything run.sh had started) is left.
func (r *runScript) waitExit(status int, procs []proc) {
	r.t.Helper()
	select {
	case <-r.exited:
	case <-time.After(60 * time.Second):
		r.t.Fatalf("run.sh (pid %d) still runs 60s after the signal", r.pid)
	}
	var exit *exec.ExitError
	if !errors.As(r.exitErr, &exit) || exit.ExitCode() != status {
		r.t.Errorf("run.sh exited with %v, want status %d", r.exitErr, status)
	}
	if !strings.Contains(r.output(), "run.sh: stopped") {
		r.t.Errorf("run.sh did not say it stopped")
	}
	for _, p := range procs {
		if p.alive() {
			r.t.Errorf("%s (pid %d) still runs after run.sh exited", p.name, p.pid)
		}
	}
}

// service returns the pid of the one process run.sh started from bin with env among
// its environment variables ("" for any).
func (r *runScript) service(bin, env string) int {
	r.t.Helper()
	var found []int
	for _, p := range r.processes() {
		if p.name == bin && (env == "" || p.hasEnv(env)) {
			found = append(found, p.pid)
		}
	}
	if len(found) != 1 {
		r.t.Fatalf("%d processes %s with %s, want 1: %v", len(found), bin, env, r.processes())
	}
	return found[0]
}

// proc is a process run.sh started.
type proc struct {
	pid  int
	name string // the executable's base name
}

func (p proc) String() string { return fmt.Sprintf("%s(%d)", p.name, p.pid) }

// alive reports whether the process still exists (a zombie counts as gone).
func (p proc) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	f := statFields(b)
	return len(f) > 0 && f[0] != "Z"
}

func (p proc) hasEnv(kv string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.pid))
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// processes lists run.sh's descendants and its Redis (which daemonizes, so it is not one).
func (r *runScript) processes() []proc {
	r.t.Helper()
	parent := map[int]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		r.t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := statFields(b); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	var out []proc
	for pid := range parent {
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == r.pid {
				out = append(out, proc{pid, exeName(pid)})
				break
			}
		}
	}
	for _, pid := range redisPids(r.dataDir) {
		out = append(out, proc{pid, "redis-server"})
	}
	return out
}

// redisPids are the pids of the Redis servers run.sh started with its data in dataDir
// that still run: its own, or the nodes of its cluster.
func redisPids(dataDir string) []int {
	files, _ := filepath.Glob(filepath.Join(dataDir, "data", "redis", "cluster-*", "redis.pid"))
	files = append(files, filepath.Join(dataDir, "data", "redis", "redis.pid"))
	var pids []int
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && isRedis(pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// statFields returns the fields of /proc/pid/stat after the command name: state, ppid, ….
func statFields(stat []byte) []string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}

func exeName(pid int) string {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return ""
	}
	return filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
}

func isRedis(pid int) bool { return strings.HasPrefix(exeName(pid), "redis-") }

// freePorts returns a loopback address whose port and the n-1 after it were free a
// moment ago. The ports are below the kernel's range for outgoing connections, so that
// no connection takes one before run.sh's services listen on it, which is seconds later.
func freePorts(t *testing.T, n int) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			low, _ = strconv.Atoi(f[0])
		}
	}
	if low <= 10000+n {
		t.Fatalf("ip_local_port_range starts at %d: no room below it for fixed ports", low)
	}
	for range 1000 {
		port := 10000 + rand.IntN(low-10000-n)
		ok := true
		var lns []net.Listener
		for i := range n {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+i))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return "127.0.0.1:" + strconv.Itoa(port)
		}
	}
	t.Fatal("no free ports")
	return ""
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// httpBody GETs url and returns its body, failing the test on anything but a 200.
func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
