// Command soak runs the whole pipeline for a while under steady load and restarts, and
// checks at the end that nothing was lost, double-counted or leaked.
//
//	go run ./scripts/soak -duration 10m
//	go run ./scripts/soak -duration 1m     # what CI runs
//
// It builds the binaries, starts a private redis-server (AOF, on a unix socket in a
// temp dir), ingest, two processors and queryapi, all on 127.0.0.1, and offers -rate
// events per second, every one with an event_id, in batches of -batch. Every
// -restart-every it restarts one processor, the two in turn, under a new consumer name:
// with SIGTERM, and every other time with SIGKILL. It prints every service's resident
// memory (VmRSS) and goroutine count (from its DEBUG_ADDR profiler) at the start and at
// the end, then compares every user's and product's counters in queryapi with the
// totals implied by the 202 answers, exactly. It exits 1 if they differ, if a request
// hung or got an answer other than 202 or 503, or if a processor did not exit cleanly
// on SIGTERM; every process it started is stopped in any case.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/clickstream/pipeline/internal/proctest"
	"github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type config struct {
	duration     time.Duration
	rate         int // events per second
	batch        int // events per request
	restartEvery time.Duration
	users        int
	products     int
	keep         bool // keep the temp dir (logs, AOF)
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.duration, "duration", 10*time.Minute, "how long to offer load")
	fs.IntVar(&c.rate, "rate", 5000, "events per second")
	fs.IntVar(&c.batch, "batch", 100, "events per request")
	fs.DurationVar(&c.restartEvery, "restart-every", 0, "restart a processor this often; 0 = 1m, or duration/4 if that is shorter")
	fs.IntVar(&c.users, "users", 10_000, "distinct users")
	fs.IntVar(&c.products, "products", 1_000, "distinct products")
	fs.BoolVar(&c.keep, "keep", false, "keep the temp dir with the logs and the AOF")
	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if c.restartEvery == 0 {
		c.restartEvery = min(time.Minute, c.duration/4)
	}
	switch {
	case c.duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.rate < 1 || c.batch < 1 || c.batch > 1000:
		return c, errors.New("-rate must be positive and -batch from 1 to 1000")
	case c.restartEvery <= 0:
		return c, errors.New("-restart-every must be positive")
	case c.users < 1 || c.products < 1:
		return c, errors.New("-users and -products must be positive")
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stdout, "soak: "+format+"\n", a...)
	}
	dir, err := os.MkdirTemp("", "soak")
	if err != nil {
		return err
	}
	defer func() {
		if cfg.keep || err != nil {
			logf("logs and AOF kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	began := time.Now()
	bin := filepath.Join(dir, "bin")
	if err := proctest.Build(bin); err != nil {
		return err
	}
	logf("built ingest, processor and queryapi in %v", time.Since(began).Round(100*time.Millisecond))

	s := &soak{cfg: cfg, fleet: proctest.NewFleet(bin, dir), logf: logf, out: stdout}
	defer func() {
		if serr := s.stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	if err := s.start(ctx, dir); err != nil {
		return err
	}
	logf("redis-server (AOF) on %s; ingest %s, queryapi %s, processors %s and %s; all ready",
		s.redisURL, s.ingest.Addr, s.queryapi.Addr, s.procs[0].Name, s.procs[1].Name)

	s.snapshot(ctx, "start")
	if err := s.load(ctx); err != nil {
		return err
	}
	return s.verdict(ctx)
}

// soak is one run: the processes, the load and what it found.
type soak struct {
	cfg   config
	fleet *proctest.Fleet
	logf  func(string, ...any)
	out   io.Writer

	redis    *proctest.Process
	redisURL string
	rdb      *redis.Client
	env      []string // REDIS_URL, REDIS_NAMESPACE
	ingest   *proctest.Process
	queryapi *proctest.Process
	procs    [2]*proctest.Process
	restarts [2]int
	debug    map[*proctest.Process]string // DEBUG_ADDR of each service

	client    *http.Client
	loadStart time.Time
	src       *workload.Source
	exp       *workload.Expected
	poster    *workload.Poster
	query     *workload.Query
	faults    []string // what went wrong besides the totals
}

func (s *soak) start(ctx context.Context, dir string) error {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("redis-server not found on PATH: %w", err)
	}
	sock := filepath.Join(dir, "redis.sock")
	s.redis, err = s.fleet.Exec("redis-server", redisBin, []string{
		"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--loglevel", "warning",
	}, nil)
	if err != nil {
		return err
	}
	s.redisURL = "unix://" + sock
	s.rdb = redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := s.rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			break
		}
		if s.redis.Exited() || ctx.Err() != nil {
			return fmt.Errorf("redis-server did not start: %v\n%s", err, proctest.Tail(s.redis.Log, 4<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}

	s.env = []string{"REDIS_URL=" + s.redisURL, "REDIS_NAMESPACE=soak"}
	s.debug = map[*proctest.Process]string{}
	if s.ingest, err = s.startService(ctx, "ingest", "ingest", "INGEST_ADDR",
		"DEDUP_WINDOW=10m"); err != nil { // a retry comes within seconds; markers need not outlive the run
		return err
	}
	if s.queryapi, err = s.startService(ctx, "queryapi", "queryapi", "QUERY_ADDR"); err != nil {
		return err
	}
	for i := range s.procs {
		if s.procs[i], err = s.startProcessor(ctx, i); err != nil {
			return err
		}
	}
	s.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	s.src = workload.NewSource(uint64(time.Now().UnixNano()), fmt.Sprintf("soak-%d-", time.Now().Unix()), s.cfg.users, s.cfg.products)
	s.exp = workload.NewExpected()
	s.poster = workload.NewPoster(s.client, "http://"+s.ingest.Addr+"/v1/events", s.exp)
	s.query = workload.NewQuery(s.client, "http://"+s.queryapi.Addr)
	return nil
}

// startService starts a service on a free loopback port (named by addrVar) with its
// profiler on another.
func (s *soak) startService(ctx context.Context, name, bin, addrVar string, env ...string) (*proctest.Process, error) {
	addr, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	debug, err := proctest.FreeAddr()
	if err != nil {
		return nil, err
	}
	env = append(append(append([]string(nil), s.env...), addrVar+"="+addr, "DEBUG_ADDR="+debug), env...)
	p, err := s.fleet.Start(ctx, name, bin, addr, env...)
	if err != nil {
		return nil, err
	}
	s.debug[p] = debug
	return p, nil
}

// startProcessor starts processor i (a or b) under its next consumer name. A killed
// processor's entries are claimed after 5 s; consumers gone for a minute are reaped.
func (s *soak) startProcessor(ctx context.Context, i int) (*proctest.Process, error) {
	name := fmt.Sprintf("proc-%c-%d", 'a'+i, s.restarts[i])
	return s.startService(ctx, name, "processor", "PROCESSOR_ADDR",
		"CONSUMER_NAME="+name, "CLAIM_MIN_IDLE=5s", "CONSUMER_EXPIRY=1m")
}

// restart restarts processor i with sig (SIGTERM or SIGKILL).
func (s *soak) restart(ctx context.Context, i int, sig syscall.Signal) error {
	old := s.procs[i]
	var how string
	if sig == syscall.SIGKILL {
		old.Kill()
		how = "SIGKILL"
	} else {
		graceful := old.Stop(30 * time.Second)
		how = "SIGTERM, exit status 0"
		if old.Err() != nil {
			how = fmt.Sprintf("SIGTERM, %v", old.Err())
		}
		if !graceful || old.Err() != nil {
			s.faults = append(s.faults, fmt.Sprintf("%s did not exit cleanly on SIGTERM (graceful %v, %v)", old.Name, graceful, old.Err()))
		}
	}
	s.restarts[i]++
	next, err := s.startProcessor(ctx, i)
	if err != nil {
		return err
	}
	s.procs[i] = next
	s.logf("%s restarted %s (%s) as %s", s.elapsed(), old.Name, how, next.Name)
	return nil
}

func (s *soak) elapsed() string {
	d := time.Since(s.loadStart).Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// load offers cfg.rate events per second for cfg.duration, restarting a processor
// every cfg.restartEvery, and returns once every batch it offered got a 202.
func (s *soak) load(ctx context.Context) error {
	s.loadStart = time.Now()
	// Posts in flight when the time is up still run until their 202: every offered
	// event is then in the expected totals or the run has failed.
	postCtx, cancelPosts := context.WithTimeout(ctx, s.cfg.duration+5*time.Minute)
	defer cancelPosts()
	work := make(chan []workload.Event, 256)
	var wg sync.WaitGroup
	var postErr error
	var once sync.Once
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if err := s.poster.Post(postCtx, b, w%2 == 1); err != nil {
					once.Do(func() { postErr = err })
				}
			}
		}()
	}

	end := time.NewTimer(s.cfg.duration)
	defer end.Stop()
	restart := time.NewTicker(s.cfg.restartEvery)
	defer restart.Stop()
	report := time.NewTicker(min(30*time.Second, s.cfg.duration/4))
	defer report.Stop()
	pace := time.NewTicker(10 * time.Millisecond)
	defer pace.Stop()
	var offered int64
	var late int
	n := 0
loop:
	for {
		select {
		case <-pace.C:
			// As many batches as are due by now, so that the rate holds on average.
			due := int64(time.Since(s.loadStart).Seconds() * float64(s.cfg.rate))
			for offered+int64(s.cfg.batch) <= due {
				b := s.src.Batch(s.cfg.batch)
				select {
				case work <- b:
				default:
					late++
					work <- b
				}
				offered += int64(len(b))
			}
		case <-restart.C:
			sig := syscall.SIGTERM
			if n%2 == 1 {
				sig = syscall.SIGKILL
			}
			if err := s.restart(ctx, n%2, sig); err != nil {
				close(work)
				wg.Wait()
				return err
			}
			n++
		case <-report.C:
			s.progress(ctx, offered)
		case <-end.C:
			break loop
		case <-ctx.Done():
			close(work)
			wg.Wait()
			return ctx.Err()
		}
	}
	close(work)
	wg.Wait()
	took := time.Since(s.loadStart)
	s.logf("%s offered %d events in %v: %.0f events/s (target %d; %d times all 32 clients were busy); %d processor restarts",
		s.elapsed(), offered, took.Round(time.Second), float64(offered)/took.Seconds(), s.cfg.rate, late, n)
	return postErr
}

func (s *soak) progress(ctx context.Context, offered int64) {
	st := &s.poster.Stats
	line := fmt.Sprintf("%s offered %d events; 202s %d, 503s %d, connection errors %d, hung %d",
		s.elapsed(), offered, st.Accepted.Load(), st.Unavailable.Load(), st.ConnErrors.Load(), st.Hung.Load())
	if pl, err := s.query.Pipeline(ctx); err == nil && len(pl.Groups) > 0 {
		g := pl.Groups[0]
		line += fmt.Sprintf("; stream %d, lag %d, pending %d, consumers %d", pl.Length, g.Lag, g.Pending, g.Consumers)
	}
	s.logf("%s", line)
}

// snapshot prints every process's VmRSS and goroutine count.
func (s *soak) snapshot(ctx context.Context, when string) {
	fmt.Fprintf(s.out, "\n== %s ==\n", when)
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "process\tpid\tVmRSS MiB\tgoroutines\t")
	procs := []*proctest.Process{s.ingest, s.procs[0], s.procs[1], s.queryapi, s.redis}
	for _, p := range procs {
		rss := "?"
		if n, err := p.RSS(); err == nil {
			rss = fmt.Sprintf("%.1f", float64(n)/(1<<20))
		}
		g := "-"
		if addr, ok := s.debug[p]; ok {
			if n, err := proctest.Goroutines(ctx, addr); err == nil {
				g = fmt.Sprint(n)
			} else {
				g = "? (" + err.Error() + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", p.Name, p.Pid(), rss, g)
	}
	tw.Flush()
	fmt.Fprintln(s.out)
}

// verdict waits until the processors caught up, prints the end snapshot and checks
// the totals; the error says what failed.
func (s *soak) verdict(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	st := &s.poster.Stats
	if n := st.Hung.Load(); n > 0 {
		s.faults = append(s.faults, fmt.Sprintf("%d requests got no answer within the client timeout", n))
	}
	if n := st.Wrong.Load(); n > 0 {
		s.faults = append(s.faults, fmt.Sprintf("%d answers other than 202 or 503 with Retry-After: %q", n, s.poster.WrongAnswers()))
	}
	pl, err := s.query.WaitDrained(ctx)
	if err != nil {
		return err
	}
	s.logf("drained %v after the load ended: stream %d entries, %d consumers in the group, dead letters %d",
		time.Since(s.loadStart.Add(s.cfg.duration)).Round(100*time.Millisecond), pl.Length, pl.Groups[0].Consumers, pl.DeadLetter.Length)
	// Idle keep-alive connections hold a goroutine each in the services; close them so
	// that the end counts compare with the start.
	s.client.CloseIdleConnections()
	time.Sleep(time.Second)
	s.snapshot(ctx, "end")

	if want := int64(s.exp.Distinct()); pl.Length != want {
		s.faults = append(s.faults, fmt.Sprintf("stream length %d, want %d distinct events answered 202", pl.Length, want))
	}
	if pl.DeadLetter.Length != 0 {
		s.faults = append(s.faults, fmt.Sprintf("%d entries dead-lettered, want 0", pl.DeadLetter.Length))
	}
	sum, err := s.query.Check(ctx, s.exp, s.src.UserIDs(), s.src.ProductIDs())
	if err != nil {
		s.faults = append(s.faults, err.Error())
	}
	s.logf("requests: %d, answered 202: %d, 503: %d, connection errors: %d, hung: %d, wrong: %d",
		st.Attempts.Load(), st.Accepted.Load(), st.Unavailable.Load(), st.ConnErrors.Load(), st.Hung.Load(), st.Wrong.Load())
	if len(s.faults) > 0 {
		return fmt.Errorf("FAIL:\n  %s", strings.Join(s.faults, "\n  "))
	}
	s.logf("PASS: %d distinct events; %v", s.exp.Distinct(), sum)
	return nil
}

// stop stops every process: the services first, so that they can finish their work
// in flight against Redis, then Redis (SIGTERM flushes its AOF). A service that does
// not exit cleanly on SIGTERM is an error.
func (s *soak) stop() error {
	var services []*proctest.Process
	for _, p := range s.fleet.Processes() {
		if p != s.redis {
			services = append(services, p)
		}
	}
	err := proctest.Stop(15*time.Second, services...)
	if s.rdb != nil {
		s.rdb.Close()
	}
	return errors.Join(err, s.fleet.StopAll(15*time.Second))
}
