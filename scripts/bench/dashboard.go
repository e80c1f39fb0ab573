package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clickstream/pipeline/events"
)

// Targets of the dashboard's measurements.
const (
	targetDashFreshP99 = 1500 * time.Millisecond // with LIVE_INTERVAL 1s
	targetLiveCPU      = 0.05                    // cores above idle with the open streams
)

// dashboardOnly is `-only dashboard`: the live stream's freshness and cost alone.
func (b *bench) dashboardOnly(ctx context.Context) error {
	b.logf("%d cores, redis %s; dashboard measurements only", cores(), b.version)
	if err := b.dashboard(ctx); err != nil {
		return err
	}
	return b.report()
}

// dashboard measures the live dashboard stream (/v1/live, LIVE_INTERVAL 1s) on its own
// ingest, processor and queryapi:
//
//   - freshness: under a steady offered load, probe events are posted one at a time,
//     and an SSE client on /v1/live records when each first shows in a snapshot. The
//     probes are the only dwell events, so probe k is in a snapshot once the last hour's
//     dwell_count there reaches k; the latency is from the probe's 202 to the arrival
//     of that snapshot. With a 1 s interval it is up to a second of waiting for the
//     next poll plus the processing, so p50 is about half a second.
//   - cost: queryapi's CPU with the streams open (each getting a snapshot a second),
//     above its CPU when idle, measured from /proc over the same length of time.
func (b *bench) dashboard(ctx context.Context) error {
	const ns = "dash"
	env := func(extra ...string) []string {
		return append([]string{"REDIS_URL=" + b.url, "REDIS_NAMESPACE=" + ns, "LOG_LEVEL=warn"}, extra...)
	}
	ingestAddr, queryAddr := freeAddr(), freeAddr()
	var procs []*exec.Cmd // stopped at the end, so that they cost nothing to what follows
	defer func() {
		for _, p := range procs {
			stopProc(p)
		}
	}()
	for _, s := range []struct{ name, addr, url string }{
		{"ingest", "INGEST_ADDR=" + ingestAddr, "http://" + ingestAddr + "/readyz"},
		{"processor", "PROCESSOR_ADDR=" + freeAddr(), ""},
	} {
		p, err := b.start(s.name+"-dash", []string{b.dir + "/" + s.name}, env(s.addr), s.url)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	q, err := b.start("queryapi-dash", []string{b.dir + "/queryapi"},
		env("QUERY_ADDR="+queryAddr, "LIVE_INTERVAL=1s", fmt.Sprintf("LIVE_MAX_CLIENTS=%d", b.o.dashStreams)), "http://"+queryAddr+"/readyz")
	if err != nil {
		return err
	}
	procs = append(procs, q)

	lat, offered, err := b.dashFreshness(ctx, ingestAddr, queryAddr)
	if err != nil {
		return err
	}
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.add(fmt.Sprintf("dashboard freshness at %s events/s offered (202 → in a /v1/live snapshot, LIVE_INTERVAL 1s)", num(offered)),
		fmt.Sprintf("p50 %s, p99 %s (%d probes)", ms(p50), ms(p99), len(lat)), "p99 ≤ "+ms(targetDashFreshP99), pass(p99 <= targetDashFreshP99))

	idle, busy, frames, err := b.liveCost(ctx, q.Process.Pid, queryAddr)
	if err != nil {
		return err
	}
	above := busy - idle
	b.add(fmt.Sprintf("queryapi CPU with %s open /v1/live streams (a snapshot a second each)", num(float64(b.o.dashStreams))),
		fmt.Sprintf("%.2f %% of a core above idle (%.2f %% with them, %.2f %% idle); %s frames/s delivered",
			100*above, 100*busy, 100*idle, num(frames)),
		fmt.Sprintf("< %.0f %% of a core", 100*targetLiveCPU), pass(above < targetLiveCPU))
	return nil
}

// dashFreshness offers b.o.dashRate events/s (clicks and page views) through ingest for
// the measurement window, posts a probe (a dwell) every 50 ms, and returns the sorted
// latencies from each probe's 202 to the first snapshot that counts it.
func (b *bench) dashFreshness(ctx context.Context, ingestAddr, queryAddr string) ([]time.Duration, float64, error) {
	const per = 100
	window := b.o.dashWindow
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The SSE client: when each dwell_count was first seen.
	var mu sync.Mutex
	var seen []time.Time // seen[k-1]: when a snapshot first counted k probes
	sseErr := make(chan error, 1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+queryAddr+"/v1/live", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET /v1/live: %s", resp.Status)
	}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || !strings.HasPrefix(data, `{"time"`) {
				continue
			}
			at := time.Now()
			var snap struct {
				Ranges map[string]struct {
					DwellCount int `json:"dwell_count"`
				} `json:"ranges"`
			}
			if err := json.Unmarshal([]byte(data), &snap); err != nil {
				sseErr <- err
				return
			}
			mu.Lock()
			for len(seen) < snap.Ranges["1h"].DwellCount {
				seen = append(seen, at)
			}
			mu.Unlock()
		}
		if ctx.Err() == nil {
			sseErr <- fmt.Errorf("the /v1/live stream ended: %v", sc.Err())
		}
	}()

	// The offered load: clicks and page views only (no dwells: those are the probes).
	bodies := make([][]byte, 16)
	for j := range bodies {
		var sb strings.Builder
		for i := 0; i < per; i++ {
			e := syntheticEvent(j*per + i)
			if e.Type == events.Dwell {
				e.Type, e.DurationMs = events.Click, 0
			}
			sb.WriteString(eventJSON(e))
			sb.WriteByte('\n')
		}
		bodies[j] = postRequest(ingestAddr, "/v1/events", "application/x-ndjson", []byte(sb.String()))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	senders := 4
	interval := time.Duration(float64(time.Second) * float64(senders*per) / float64(b.o.dashRate))
	loadErr := make(chan error, senders)
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			// Paced by a schedule, not a ticker: a request that takes longer than the
			// interval is followed at once by the next, so the offered rate holds.
			next := time.Now().Add(time.Duration(s) * interval / time.Duration(senders))
			k := s
			loadErr <- postN(ingestAddr, func() []byte {
				wait := time.NewTimer(time.Until(next))
				defer wait.Stop()
				select {
				case <-stop:
					return nil
				case <-wait.C:
				}
				next = next.Add(interval)
				k++
				sent.Add(per)
				return bodies[k%len(bodies)]
			})
		}(s)
	}
	time.Sleep(2 * time.Second) // the load settles before the first probe

	// Probes, one at a time, so that the stream holds them in order.
	client := &http.Client{Timeout: 5 * time.Second}
	var accepted []time.Time
	start, sent0 := time.Now(), sent.Load()
	tick := time.NewTicker(50 * time.Millisecond)
	for time.Since(start) < window {
		<-tick.C
		r, err := client.Post("http://"+ingestAddr+"/v1/events", "application/json",
			strings.NewReader(`{"user_id":"probe","product_id":"probe","type":"dwell","duration_ms":1000}`))
		if err != nil {
			return nil, 0, fmt.Errorf("probe: %w", err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusAccepted {
			return nil, 0, fmt.Errorf("probe: %s", r.Status)
		}
		accepted = append(accepted, time.Now())
	}
	tick.Stop()
	elapsed, offered := time.Since(start), float64(sent.Load()-sent0)
	// Every probe must show, in a snapshot or two.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= len(accepted) {
			break
		}
		select {
		case err := <-sseErr:
			return nil, 0, err
		default:
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("%d of %d probes never showed in a snapshot", len(accepted)-n, len(accepted))
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(loadErr)
	for err := range loadErr {
		if err != nil {
			return nil, 0, fmt.Errorf("dashboard load: %w", err)
		}
	}
	mu.Lock()
	lat := make([]time.Duration, len(accepted))
	for k, at := range accepted {
		lat[k] = max(seen[k].Sub(at), 0) // a snapshot can arrive before the 202 does
	}
	mu.Unlock()
	slices.Sort(lat)
	offered /= elapsed.Seconds()
	b.logf("dashboard freshness: %d probes at %s events/s offered: p50 %s p99 %s max %s",
		len(lat), num(offered), ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), ms(lat[len(lat)-1]))
	return lat, offered, nil
}

// liveCost returns queryapi's CPU (in cores) idle and with b.o.dashStreams streams
// open, each over the measurement window, and the frames per second the streams got.
func (b *bench) liveCost(ctx context.Context, pid int, queryAddr string) (idle, busy, frames float64, err error) {
	window := b.o.dashWindow
	time.Sleep(2 * time.Second) // the freshness client's stream has gone, the poller stopped
	m := newCPUMeter(pid)
	time.Sleep(window)
	idle = m.cores()[0]

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var got atomic.Int64  // frames received, all streams
	var open atomic.Int64 // streams that have had their first frame
	errs := make(chan error, b.o.dashStreams)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	for i := 0; i < b.o.dashStreams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialer.DialContext(ctx, "tcp", queryAddr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			context.AfterFunc(ctx, func() { c.Close() })
			fmt.Fprintf(c, "GET /v1/live HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", queryAddr)
			br := bufio.NewReaderSize(c, 16<<10)
			status, err := br.ReadString('\n')
			if err != nil || !strings.Contains(status, " 200 ") {
				errs <- fmt.Errorf("GET /v1/live: %q %v", status, err)
				return
			}
			first := true
			for {
				line, err := br.ReadSlice('\n')
				if err == bufio.ErrBufferFull {
					continue
				}
				if err != nil {
					return
				}
				if len(line) > 4 && string(line[:4]) == "id: " {
					got.Add(1)
					if first {
						first = false
						open.Add(1)
					}
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for open.Load() < int64(b.o.dashStreams) {
		select {
		case err := <-errs:
			return 0, 0, 0, fmt.Errorf("opening %d streams: %w", b.o.dashStreams, err)
		default:
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("only %d of %d streams got a snapshot within 60 s", open.Load(), b.o.dashStreams)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// One more is refused: LIVE_MAX_CLIENTS.
	if resp, err := http.Get("http://" + queryAddr + "/v1/live"); err == nil {
		resp.Body.Close()
		b.logf("stream %d: %s (LIVE_MAX_CLIENTS %d)", b.o.dashStreams+1, resp.Status, b.o.dashStreams)
	}
	time.Sleep(time.Second)
	m = newCPUMeter(pid, b.redis.Process.Pid, os.Getpid())
	got0 := got.Load()
	time.Sleep(window)
	c := m.cores()
	frames = float64(got.Load()-got0) / window.Seconds()
	busy = c[0]
	b.logf("/v1/live with %d streams: queryapi %.4f cores (idle %.4f), redis %.4f, the clients %.4f; %s frames/s",
		b.o.dashStreams, busy, idle, c[1], c[2], num(frames))
	return idle, busy, frames, nil
}
