package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/redis/go-redis/v9"
)

// Targets of the performance issue, checked against what this run measured.
const (
	targetSingleRatio = 0.80
	targetBatch       = 500_000.0
	targetProcessor   = 250_000.0
	targetPeerRatio   = 10.0
	targetFreshP99    = 50 * time.Millisecond
	targetBytesPerEv  = 45.0
	targetQueryRatio  = 0.80
)

func (b *bench) all() error {
	ctx := context.Background()
	b.logf("%d cores, redis %s, %d connections, %s windows", cores(), b.version, b.o.conns, b.o.window)

	// 1. Single-event POSTs: ceiling, naive, project.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ceiling, err := b.singleEvent("null handler (decode + validate + 202, no Redis)",
		func(addr string) []string { return []string{self, "-serve", "null", "-addr", addr} })
	if err != nil {
		return err
	}
	naive, err := b.singleEvent("naive: one XADD round trip per request",
		func(addr string) []string { return []string{self, "-serve", "naive", "-addr", addr, "-redis", b.url} })
	if err != nil {
		return err
	}
	project, err := b.singleEvent("project ingest",
		func(addr string) []string { return []string{b.dir + "/ingest"} }, "REDIS_NAMESPACE=single")
	if err != nil {
		return err
	}
	for _, r := range []struct {
		name string
		res  loadResult
	}{{"null handler (ceiling)", ceiling}, {"naive one-XADD handler", naive}, {"project ingest", project}} {
		ratio := r.res.rps() / ceiling.rps()
		target, verdict := "", ""
		if r.name == "project ingest" {
			target = fmt.Sprintf("≥ %.2f × ceiling", targetSingleRatio)
			verdict = pass(ratio >= targetSingleRatio)
		}
		b.add(fmt.Sprintf("single-event POST, %d conns: %s", b.o.conns, r.name),
			fmt.Sprintf("%s req/s, p50 %s, p99 %s, %.2f × ceiling", num(r.res.rps()), ms(r.res.pct(0.5)), ms(r.res.pct(0.99)), ratio),
			target, verdict)
	}

	// 2. Batch ingest of the preload, and the memory the stream costs per event.
	ingestAddr := freeAddr()
	if _, err := b.start("ingest-drain", []string{b.dir + "/ingest"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=drain", "INGEST_ADDR=" + ingestAddr, "LOG_LEVEL=warn"},
		"http://"+ingestAddr+"/readyz"); err != nil {
		return err
	}
	mem0, err := b.usedMemory(ctx)
	if err != nil {
		return err
	}
	batchRate, err := b.batchIngest(ingestAddr, b.o.events, 500)
	if err != nil {
		return err
	}
	mem1, err := b.usedMemory(ctx)
	if err != nil {
		return err
	}
	perEvent := float64(mem1-mem0) / float64(b.o.events)
	b.add("batch ingest, NDJSON 500 events/request, 8 conns", num(batchRate)+" events/s", fmt.Sprintf("≥ %s events/s", num(targetBatch)), pass(batchRate >= targetBatch))
	b.add(fmt.Sprintf("Redis memory per stored event (%s events, no event_id)", num(float64(b.o.events))), fmt.Sprintf("%.1f B", perEvent), fmt.Sprintf("≤ %.0f B", targetBytesPerEv), pass(perEvent <= targetBytesPerEv))

	// 3. Processor drain of the preload, then the watermill peer.
	drain, err := b.drain(ctx)
	if err != nil {
		return err
	}
	worst, err := b.drainWorstCase(ctx)
	if err != nil {
		return err
	}

	peerN := int(b.o.peerWindow.Seconds()*40_000) + 10_000
	if err := publishWatermill(ctx, b.rdb, "{peer}:events", peerN, syntheticEvent); err != nil {
		return err
	}
	peer := 0.0
	peerDesc := ""
	for _, consumers := range []int{1, 8} {
		rate, err := watermillPeer(b.rdb, "{peer}:events", consumers, b.o.peerWindow)
		if err != nil {
			return fmt.Errorf("watermill peer: %w", err)
		}
		b.logf("watermill peer, %d consumers: %s events/s", consumers, num(rate))
		peerDesc += fmt.Sprintf("%d consumer(s): %s/s; ", consumers, num(rate))
		peer = max(peer, rate)
	}
	b.addDrain(drain, worst)
	b.add("watermill Router + redisstream peer, per-message idempotent apply", strings.TrimSuffix(peerDesc, "; "), "", "")
	b.add("processor / best watermill peer", fmt.Sprintf("%.1f ×", drain/peer), fmt.Sprintf("≥ %.0f ×", targetPeerRatio), pass(drain/peer >= targetPeerRatio))
	day, err := b.dayModel(ctx)
	if err != nil {
		return err
	}
	b.add("processor with time buckets (day model) / best watermill peer", fmt.Sprintf("%.1f ×", day/peer), fmt.Sprintf("≥ %.0f ×", targetPeerRatio), pass(day/peer >= targetPeerRatio))

	// 4. Freshness under a steady offered load, read through queryapi.
	queryAddr := freeAddr()
	queryProc, err := b.start("queryapi", []string{b.dir + "/queryapi"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=drain", "QUERY_ADDR=" + queryAddr, "LOG_LEVEL=warn"},
		"http://"+queryAddr+"/readyz")
	if err != nil {
		return err
	}
	fresh, offered, err := b.freshness(ingestAddr, queryAddr)
	if err != nil {
		return err
	}
	b.add(fmt.Sprintf("freshness at %s events/s offered (202 → visible in queryapi)", num(offered)),
		fmt.Sprintf("p50 %s, p99 %s (%d probes)", ms(fresh[len(fresh)/2]), ms(fresh[len(fresh)*99/100]), len(fresh)),
		"p99 ≤ "+ms(targetFreshP99), pass(fresh[len(fresh)*99/100] <= targetFreshP99))

	// 5. Query throughput.
	q := httpLoad{addr: queryAddr, conns: b.o.conns, duration: b.o.window, okStatus: http.StatusOK,
		request: cycle(4096, func(i int) []byte { return getRequest(queryAddr, "/v1/users/"+syntheticEvent(i*31).UserID) })}
	q.run() // warm-up
	m := newCPUMeter(queryProc.Process.Pid, b.redis.Process.Pid, os.Getpid())
	qr := q.run()
	b.logf("queries: %s req/s; %s", num(qr.rps()), b.cpuSummary(m))
	if qr.firstErr != nil {
		return fmt.Errorf("query load: %w", qr.firstErr)
	}
	b.add(fmt.Sprintf("GET /v1/users/:id, %d conns", b.o.conns),
		fmt.Sprintf("%s req/s, p50 %s, p99 %s, %.2f × ceiling", num(qr.rps()), ms(qr.pct(0.5)), ms(qr.pct(0.99)), qr.rps()/ceiling.rps()),
		fmt.Sprintf("≥ %.2f × ceiling", targetQueryRatio), pass(qr.rps()/ceiling.rps() >= targetQueryRatio))

	if err := b.statsQueries(ctx); err != nil {
		return err
	}
	if err := b.rebuild(ctx, b.o.events); err != nil {
		return err
	}
	// Segment's /v1/batch against NDJSON, 100 events a request.
	if err := b.segmentRows(ctx, b.o.events/4, 1, false); err != nil {
		return err
	}
	// The other services are stopped first: the dashboard's cost is measured alone, and
	// the scale-out runs start their own.
	for _, p := range b.procs {
		stopProc(p)
	}
	if err := b.dashboard(ctx); err != nil {
		return err
	}
	if err := b.scaleOut(ctx); err != nil {
		return err
	}
	return b.report()
}

// processorOnly is `-only processor`: the measurements of the processor's apply path
// alone (the drain, its worst case and the rebuild), on events written straight into
// the stream, so that a change to the apply can be measured in a minute.
func (b *bench) processorOnly(ctx context.Context) error {
	b.logf("%d cores, redis %s; processor measurements only", cores(), b.version)
	if err := b.preload(ctx, events.NewKeys("drain"), b.o.events, syntheticEvent); err != nil {
		return err
	}
	drain, err := b.drain(ctx)
	if err != nil {
		return err
	}
	worst, err := b.drainWorstCase(ctx)
	if err != nil {
		return err
	}
	b.addDrain(drain, worst)
	if _, err := b.dayModel(ctx); err != nil {
		return err
	}
	if err := b.rebuild(ctx, b.o.events); err != nil {
		return err
	}
	return b.report()
}

// drain measures how fast one processor drains the events preloaded into the drain
// namespace, and where Redis spent its time meanwhile.
func (b *bench) drain(ctx context.Context) (float64, error) {
	keys := events.NewKeys("drain")
	if err := b.rdb.ConfigResetStat(ctx).Err(); err != nil {
		return 0, err
	}
	redisCPU0 := cpuTime(b.redis.Process.Pid)
	t0 := time.Now()
	if _, err := b.start("processor", []string{b.dir + "/processor"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=drain", "PROCESSOR_ADDR=" + freeAddr(), "LOG_LEVEL=warn"}, ""); err != nil {
		return 0, err
	}
	if err := b.waitDrained(ctx, keys.Stream(), keys.Gen(1).Group(), 10*time.Minute); err != nil {
		return 0, err
	}
	rate := float64(b.o.events) / time.Since(t0).Seconds()
	b.logf("processor drained %d events at %s events/s", b.o.events, num(rate))
	return rate, b.redisProfile(ctx, "the drain", cpuTime(b.redis.Process.Pid)-redisCPU0, b.o.events)
}

func (b *bench) addDrain(drain, worst float64) {
	b.add(fmt.Sprintf("processor drain of %s preloaded events, 1 process", num(float64(b.o.events))), num(drain)+" events/s", "≥ "+num(targetProcessor), pass(drain >= targetProcessor))
	b.add("processor drain, worst case: no user or product repeats within a batch", num(worst)+" events/s", "", "")
}

// preload appends n events straight to the stream of keys, as ingest would store them.
func (b *bench) preload(ctx context.Context, keys events.Keys, n int, event func(int) events.Event) error {
	pipe := b.rdb.Pipeline()
	for i := 0; i < n; i++ {
		e := event(i)
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: keys.Stream(), Values: e.AppendFields(nil)})
		if pipe.Len() == 1000 || i == n-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// rebuild measures `processor rebuild` on preloaded synthetic events: the replay into a
// new generation, the switch and the removal of the old generation's keys.
func (b *bench) rebuild(ctx context.Context, n int) error {
	if err := b.preload(ctx, events.NewKeys("rebuild"), n, syntheticEvent); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, b.dir+"/processor", "rebuild")
	cmd.Env = append(os.Environ(), "REDIS_URL="+b.url, "REDIS_NAMESPACE=rebuild", "LOG_LEVEL=warn")
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("processor rebuild: %v\n%s", err, out)
	}
	rate := float64(n) / time.Since(t0).Seconds()
	b.logf("rebuild of %d events: %s events/s", n, num(rate))
	b.add(fmt.Sprintf("processor rebuild of %s events (replay, switch, old keys removed)", num(float64(n))), num(rate)+" events/s", "", "")
	return nil
}

// redisProfile logs where Redis spent its time during a drain, per event: its CPU time
// and the time INFO commandstats gives each command (the Lua apply includes the
// commands it calls).
func (b *bench) redisProfile(ctx context.Context, what string, cpu time.Duration, n int) error {
	info, err := b.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return err
	}
	line := fmt.Sprintf("redis during %s: %.2f µs CPU per event;", what, float64(cpu.Microseconds())/float64(n))
	for _, c := range []string{"xreadgroup", "evalsha", "xack", "hincrby", "zincrby", "pfadd", "zadd", "zremrangebyscore", "pexpireat"} {
		v := infoField(info, "cmdstat_"+c)
		calls, usec := statField(v, "calls"), statField(v, "usec")
		line += fmt.Sprintf(" %s %d calls %.2f µs/event;", c, calls, float64(usec)/float64(n))
	}
	b.logf("%s", strings.TrimSuffix(line, ";"))
	return nil
}

// statField reads name=value from an INFO commandstats line.
func statField(line, name string) int64 {
	for _, kv := range strings.Split(line, ",") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// drainWorstCase preloads the uniform workload straight into a stream and measures how
// fast one processor drains it.
func (b *bench) drainWorstCase(ctx context.Context) (float64, error) {
	if err := b.preload(ctx, events.NewKeys("worst"), b.o.events, uniformEvent); err != nil {
		return 0, err
	}
	rate, err := b.drainOnce(ctx, "worst")
	if err == nil {
		b.logf("processor drained the worst case at %s events/s", num(rate))
	}
	return rate, err
}

// drainOnce starts one processor on the preloaded namespace ns, waits until it has
// applied everything, stops it and returns its rate.
func (b *bench) drainOnce(ctx context.Context, ns string) (float64, error) {
	keys := events.NewKeys(ns)
	t0 := time.Now()
	p, err := b.start("processor-"+ns, []string{b.dir + "/processor"},
		[]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=" + ns, "PROCESSOR_ADDR=" + freeAddr(), "LOG_LEVEL=warn"}, "")
	if err != nil {
		return 0, err
	}
	defer stopProc(p)
	if err := b.waitDrained(ctx, keys.Stream(), keys.Gen(1).Group(), 10*time.Minute); err != nil {
		return 0, err
	}
	return float64(b.o.events) / time.Since(t0).Seconds(), nil
}

// singleEvent starts a server, drives it with single-event POSTs, and stops it, so that
// no two servers compete for the CPU.
func (b *bench) singleEvent(name string, argv func(addr string) []string, env ...string) (loadResult, error) {
	addr := freeAddr()
	env = append(env, "REDIS_URL="+b.url, "INGEST_ADDR="+addr, "LOG_LEVEL=warn")
	p, err := b.start(name, argv(addr), env, "")
	if err != nil {
		return loadResult{}, err
	}
	defer stopProc(p)
	if err := waitListening(addr); err != nil {
		return loadResult{}, fmt.Errorf("%s: %w", name, err)
	}
	l := httpLoad{addr: addr, conns: b.o.conns, duration: b.o.window, okStatus: http.StatusAccepted,
		request: cycle(4096, func(i int) []byte {
			return postRequest(addr, "/v1/events", "application/json", []byte(eventJSON(syntheticEvent(i))))
		})}
	warm := l
	warm.duration = b.o.window / 3
	warm.run()
	m := newCPUMeter(p.Process.Pid, b.redis.Process.Pid, os.Getpid())
	res := l.run()
	if res.firstErr != nil {
		return res, fmt.Errorf("%s: %w", name, res.firstErr)
	}
	b.logf("%s: %s req/s, p50 %s, p99 %s; %s", name, num(res.rps()), ms(res.pct(0.5)), ms(res.pct(0.99)), b.cpuSummary(m))
	return res, nil
}

func waitListening(addr string) error {
	for i := 0; i < 500; i++ {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s", addr)
}

// cycle precomputes n requests and hands them out round-robin.
func cycle(n int, mk func(i int) []byte) func(c, i int) []byte {
	reqs := make([][]byte, n)
	for i := range reqs {
		reqs[i] = mk(i)
	}
	return func(c, i int) []byte { return reqs[(c*7+i)%n] }
}

// batchIngest posts total events as NDJSON batches over 8 connections and returns
// events/s.
func (b *bench) batchIngest(addr string, total, per int) (float64, error) {
	bodies := make([][]byte, 64)
	for j := range bodies {
		var sb strings.Builder
		for i := 0; i < per; i++ {
			sb.WriteString(eventJSON(syntheticEvent(j*per + i)))
			sb.WriteByte('\n')
		}
		bodies[j] = postRequest(addr, "/v1/events", "application/x-ndjson", []byte(sb.String()))
	}
	requests := total / per
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := time.Now()
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- postN(addr, func() []byte {
				i := next.Add(1) - 1
				if i >= int64(requests) {
					return nil
				}
				return bodies[i%int64(len(bodies))]
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, fmt.Errorf("batch ingest: %w", err)
		}
	}
	rate := float64(requests*per) / elapsed.Seconds()
	b.logf("batch ingest: %d events in %s: %s events/s", requests*per, elapsed.Round(time.Millisecond), num(rate))
	return rate, nil
}

// postN sends the requests next returns (until nil) on one connection, each expecting 202.
func postN(addr string, next func() []byte) error {
	l := httpLoad{addr: addr, okStatus: http.StatusAccepted}
	var stop atomic.Bool
	var reqs atomic.Int64
	lat := make([]time.Duration, 0, 1024)
	i := 0
	l.request = func(c, _ int) []byte {
		r := next()
		if r == nil {
			stop.Store(true)
			return getRequest(addr, "/healthz") // answered 200: ends the connection's loop below
		}
		return r
	}
	err := l.conn(0, &i, &stop, &reqs, &lat)
	if err != nil && stop.Load() && strings.Contains(err.Error(), "status 200") {
		return nil
	}
	return err
}

// freshness offers a steady load through ingest and, alongside it, posts probe events
// for fresh users and polls queryapi until each one is visible. It returns the sorted
// latencies from the probe's 202 to its visibility.
func (b *bench) freshness(ingestAddr, queryAddr string) ([]time.Duration, float64, error) {
	const per = 100
	rate := b.o.freshRate
	window := 2 * b.o.window
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	bodies := make([][]byte, 16)
	for j := range bodies {
		var sb strings.Builder
		for i := 0; i < per; i++ {
			sb.WriteString(eventJSON(syntheticEvent(j*per + i)))
			sb.WriteByte('\n')
		}
		bodies[j] = postRequest(ingestAddr, "/v1/events", "application/x-ndjson", []byte(sb.String()))
	}
	// Background load: rate/per requests per second, paced by a ticker per sender.
	senders := 8
	interval := time.Duration(float64(time.Second) * float64(senders*per) / float64(rate))
	loadErr := make(chan error, senders)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			k := s
			loadErr <- postN(ingestAddr, func() []byte {
				select {
				case <-stop:
					return nil
				case <-t.C:
				}
				k++
				sent.Add(per)
				return bodies[k%len(bodies)]
			})
		}(s)
	}
	// Probes: one every 20 ms, each a new user, polled until it shows one click.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	var lat []time.Duration
	var probeErr error
	var pw sync.WaitGroup
	start := time.Now()
	for i := 0; time.Since(start) < window; i++ {
		pw.Add(1)
		go func(i int) {
			defer pw.Done()
			user := fmt.Sprintf("fresh-%d-%d", time.Now().UnixNano(), i)
			body := fmt.Sprintf(`{"user_id":%q,"product_id":"probe"}`, user)
			resp, err := client.Post("http://"+ingestAddr+"/v1/events", "application/json", strings.NewReader(body))
			if err != nil || resp.StatusCode != http.StatusAccepted {
				mu.Lock()
				probeErr = fmt.Errorf("probe post: %v %v", err, resp)
				mu.Unlock()
				return
			}
			resp.Body.Close()
			accepted := time.Now()
			for time.Since(accepted) < 10*time.Second {
				r, err := client.Get("http://" + queryAddr + "/v1/users/" + user)
				if err == nil {
					buf := make([]byte, 256)
					n, _ := r.Body.Read(buf)
					r.Body.Close()
					if strings.Contains(string(buf[:n]), `"clicks":1`) {
						mu.Lock()
						lat = append(lat, time.Since(accepted))
						mu.Unlock()
						return
					}
				}
				time.Sleep(500 * time.Microsecond)
			}
			mu.Lock()
			probeErr = fmt.Errorf("probe %s not visible within 10s", user)
			mu.Unlock()
		}(i)
		time.Sleep(20 * time.Millisecond)
	}
	pw.Wait()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	close(loadErr)
	for err := range loadErr {
		if err != nil {
			return nil, 0, fmt.Errorf("freshness load: %w", err)
		}
	}
	if probeErr != nil {
		return nil, 0, probeErr
	}
	slices.Sort(lat)
	offered := float64(sent.Load()) / elapsed.Seconds()
	b.logf("freshness: %d probes at %s events/s offered: p50 %s p99 %s", len(lat), num(offered), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]))
	return lat, offered, nil
}

func (b *bench) add(what, result, target, verdict string) {
	b.rows = append(b.rows, row{what, result, target, verdict})
}

func pass(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func num(f float64) string {
	s := strconv.FormatInt(int64(f+0.5), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) + " ms"
}

// generatedEnd separates the part of BENCHMARKS.md that bench writes from the notes
// people keep below it, which a new run leaves as they are.
const generatedEnd = "<!-- end of the part written by scripts/bench -->"

func (b *bench) report() error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| measurement | result | target | |\n|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", r.what, r.result, r.target, r.verdict)
	}
	table := sb.String()
	fmt.Fprint(b.out, "\n"+table)
	if b.o.out == "" {
		return nil
	}
	command := "go run ./scripts/bench"
	if b.o.quick {
		command += " -quick` (smaller counts and windows: not comparable to a full run)"
	} else {
		command += "`"
	}
	doc := fmt.Sprintf(`# Benchmarks

Produced by `+"`%s"+` on %s: %d cores, Redis %s (a private
redis-server on a unix socket, persistence off); the load generator, the servers and
Redis share the machine. Every figure comes from this one run, side by side.

%s
The run's log, with the CPU each process used during each HTTP measurement:

`+"```"+`
%s`+"```"+`

How each row is measured: the comment on each function in scripts/bench/measure.go.
Ratios compare servers measured one after the other in this run with the same client;
absolute figures move with the machine's load.

%s
`, command, time.Now().UTC().Format("2006-01-02"), cores(), b.version, table, b.log.String(), generatedEnd)
	if old, err := os.ReadFile(b.o.out); err == nil {
		if i := strings.Index(string(old), generatedEnd); i >= 0 {
			doc += strings.TrimPrefix(string(old[i+len(generatedEnd):]), "\n")
		}
	}
	return os.WriteFile(b.o.out, []byte(doc), 0o644)
}
