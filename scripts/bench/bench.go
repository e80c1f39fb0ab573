package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/lag"
	"github.com/redis/go-redis/v9"
)

// bench owns the processes of one run: a redis-server, the project's binaries and the
// reference servers.
type bench struct {
	o       options
	out     io.Writer
	dir     string // temp dir: binaries, redis socket, logs
	redis   *exec.Cmd
	url     string
	rdb     *redis.Client
	procs   []*exec.Cmd
	rows    []row
	version string
	log     strings.Builder // what logf printed, for the report
}

type row struct {
	what, result, target, verdict string
}

func newBench(ctx context.Context, o options, out io.Writer) (*bench, error) {
	dir, err := os.MkdirTemp("", "bench")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, out: out, dir: dir}
	b.logf("building binaries into %s", dir)
	build := exec.Command("go", "build", "-o", dir+"/", "./ingest", "./processor", "./queryapi")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		b.close()
		return nil, fmt.Errorf("go build (run bench from the repository root): %w", err)
	}
	sock := filepath.Join(dir, "redis.sock")
	b.redis = exec.Command("redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log"))
	if err := b.redis.Start(); err != nil {
		b.close()
		return nil, fmt.Errorf("start redis-server (apt-get install redis-server): %w", err)
	}
	b.url = "unix://" + sock
	opt, _ := redis.ParseURL(b.url)
	opt.PoolSize = 64
	b.rdb = redis.NewClient(opt)
	for i := 0; ; i++ {
		if err := b.rdb.Ping(ctx).Err(); err == nil {
			break
		} else if i > 200 {
			b.close()
			return nil, fmt.Errorf("redis-server did not start: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	info, _ := b.rdb.Info(ctx, "server").Result()
	b.version = infoField(info, "redis_version")
	return b, nil
}

func (b *bench) logf(format string, args ...any) {
	line := fmt.Sprintf(format+"\n", args...)
	fmt.Fprint(b.out, "# "+line)
	b.log.WriteString(line)
}

func (b *bench) close() {
	for _, p := range b.procs {
		stopProc(p)
	}
	if b.rdb != nil {
		b.rdb.Close()
	}
	if b.redis != nil && b.redis.Process != nil {
		b.redis.Process.Kill()
		b.redis.Wait()
	}
	os.RemoveAll(b.dir)
}

// start runs a program with env added to the bench's own, logs into the temp dir, and
// waits until url answers 200 (when url is not empty).
func (b *bench) start(name string, argv []string, env []string, url string) (*exec.Cmd, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b.procs = append(b.procs, cmd)
	if url == "" {
		return cmd, nil
	}
	for i := 0; i < 500; i++ {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(b.dir, name+".log"))
	return nil, fmt.Errorf("%s did not become ready at %s:\n%s", name, url, log)
}

func stopProc(p *exec.Cmd) {
	if p.Process == nil || p.ProcessState != nil {
		return
	}
	p.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Process.Kill()
		<-done
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (b *bench) usedMemory(ctx context.Context) (int64, error) {
	info, err := b.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}

// waitDrained polls the group until every entry of the stream was delivered and acked.
func (b *bench) waitDrained(ctx context.Context, stream, group string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s, groups, err := lag.Read(ctx, b.rdb, stream)
		if err == nil {
			for _, g := range groups {
				if g.Name == group && lag.Of(s, g) == 0 && g.Pending == 0 && s.Length > 0 {
					return nil
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("stream not drained within " + timeout.String())
}

// The synthetic workload: 100,000 users and 10,000 products with Zipf-distributed
// activity (s = 1.1), as in a shop where a few products and active users account for
// much of the traffic. Ids are fixed-width so that the memory figures do not depend on
// which ids the draw favours. uniformEvent is the worst case for the processor: every
// event of a batch touches a user and a product no other event of the batch touches, so
// summing per key within a batch saves nothing.
const (
	users    = 100_000
	products = 10_000
	drawN    = 1 << 20
)

var zipfUsers, zipfProducts = zipfDraws(1, users, products)

// zipfDraws draws drawN users and products from Zipf distributions (s = 1.1) over
// users and products ids, from seed.
func zipfDraws(seed int64, users, products int) ([]int32, []int32) {
	r := rand.New(rand.NewSource(seed))
	zu := rand.NewZipf(r, 1.1, 1, uint64(users-1))
	zp := rand.NewZipf(r, 1.1, 1, uint64(products-1))
	u, p := make([]int32, drawN), make([]int32, drawN)
	for i := range u {
		u[i], p[i] = int32(zu.Uint64()), int32(zp.Uint64())
	}
	return u, p
}

func userID(i int) string    { return fmt.Sprintf("u%06d", i) }
func productID(i int) string { return fmt.Sprintf("p%05d", i) }

func withType(e events.Event, i int) events.Event {
	switch i % 10 {
	case 7, 8:
		e.Type = events.PageView
	case 9:
		e.Type, e.DurationMs = events.Dwell, int64(500+i%30_000)
	}
	return e
}

func syntheticEvent(i int) events.Event {
	j := i % drawN
	return withType(events.Event{UserID: userID(int(zipfUsers[j])), ProductID: productID(int(zipfProducts[j]))}, i)
}

func uniformEvent(i int) events.Event {
	return withType(events.Event{UserID: userID(i % users), ProductID: productID((i * 7919) % products)}, i)
}

func eventJSON(e events.Event) string {
	switch e.Type {
	case events.PageView:
		return fmt.Sprintf(`{"user_id":%q,"product_id":%q,"type":"page_view"}`, e.UserID, e.ProductID)
	case events.Dwell:
		return fmt.Sprintf(`{"user_id":%q,"product_id":%q,"type":"dwell","duration_ms":%d}`, e.UserID, e.ProductID, e.DurationMs)
	}
	return fmt.Sprintf(`{"user_id":%q,"product_id":%q}`, e.UserID, e.ProductID)
}

func cores() int { return runtime.NumCPU() }

// cpuMeter reads how much CPU time processes used, from /proc, to show where a
// measurement's CPU went (server, Redis, the load generator itself).
type cpuMeter struct {
	pids  []int
	start []time.Duration
	t0    time.Time
}

func newCPUMeter(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids, t0: time.Now()}
	for _, p := range pids {
		m.start = append(m.start, cpuTime(p))
	}
	return m
}

// cores returns, per process, the average number of cores used since the meter started.
func (m *cpuMeter) cores() []float64 {
	wall := time.Since(m.t0)
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		out[i] = float64(cpuTime(p)-m.start[i]) / float64(wall)
	}
	return out
}

// cpuTime is utime+stime of a process (all threads), or 0 when it cannot be read.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	// Fields after the command name, which is in parentheses and may contain spaces.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func (b *bench) cpuSummary(m *cpuMeter) string {
	c := m.cores()
	return fmt.Sprintf("CPU cores used: server %.2f, redis %.2f, load generator %.2f", c[0], c[1], c[2])
}
