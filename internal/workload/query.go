package workload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Query reads queryapi.
type Query struct {
	client *http.Client
	base   string // http://host:port
}

// NewQuery returns a reader of the queryapi at base ("http://127.0.0.1:8081").
func NewQuery(client *http.Client, base string) *Query { return &Query{client: client, base: base} }

// Get reads path into v; anything but a 200 is an error.
func (q *Query) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w in %s", path, err, body)
	}
	return nil
}

// Pipeline is queryapi's /v1/pipeline.
type Pipeline struct {
	Stream string  `json:"stream"`
	Length int64   `json:"length"`
	Groups []Group `json:"groups"`

	DeadLetter struct {
		Stream string `json:"stream"`
		Length int64  `json:"length"`
	} `json:"dead_letter"`
}

// Group is one consumer group in Pipeline.
type Group struct {
	Name      string `json:"name"`
	Pending   int64  `json:"pending"`
	Lag       int64  `json:"lag"`
	Consumers int64  `json:"consumers"`
}

// Pipeline reads /v1/pipeline.
func (q *Query) Pipeline(ctx context.Context) (Pipeline, error) {
	var p Pipeline
	err := q.Get(ctx, "/v1/pipeline", &p)
	return p, err
}

// WaitDrained polls /v1/pipeline until there is a consumer group and every group has
// nothing undelivered (lag) and nothing unacked (pending), and returns that state.
// Errors (queryapi or Redis still recovering) are retried until ctx ends.
func (q *Query) WaitDrained(ctx context.Context) (Pipeline, error) {
	var last Pipeline
	var lastErr error
	for {
		p, err := q.Pipeline(ctx)
		if err == nil {
			last, lastErr = p, nil
			if drained(p) {
				return p, nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("pipeline not drained: %w (last state %+v, last error %v)", ctx.Err(), last, lastErr)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func drained(p Pipeline) bool {
	if len(p.Groups) == 0 {
		return false
	}
	for _, g := range p.Groups {
		if g.Pending != 0 || g.Lag != 0 {
			return false
		}
	}
	return true
}

// Summary sums what Check compared.
type Summary struct {
	Users, Products int      // ids compared
	Sum             Counters // over all users
}

func (s Summary) String() string {
	return fmt.Sprintf("%d users and %d products exact (%d clicks, %d page views, %d dwells, %d dwell ms)",
		s.Users, s.Products, s.Sum.Clicks, s.Sum.PageViews, s.Sum.DwellCount, s.Sum.DwellMs)
}

// Check compares the four counters of every user and product in users and products,
// and of every id exp has counts for, with exp, exactly. The error lists the first
// mismatches.
func (q *Query) Check(ctx context.Context, exp *Expected, users, products []string) (Summary, error) {
	eu, ep := exp.ids()
	users, products = union(users, eu), union(products, ep)
	type job struct {
		path string
		want Counters
	}
	jobs := make(chan job)
	var mu sync.Mutex
	var mismatches, failures []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				var got Counters
				err := q.Get(ctx, j.path, &got)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, err.Error())
				case got != j.want:
					mismatches = append(mismatches, fmt.Sprintf("GET %s: got %+v, want %+v", j.path, got, j.want))
				}
				mu.Unlock()
			}
		}()
	}
	var s Summary
	for _, id := range users {
		want := exp.User(id)
		s.Sum.add(want)
		jobs <- job{"/v1/users/" + id, want}
	}
	for _, id := range products {
		jobs <- job{"/v1/products/" + id, exp.Product(id)}
	}
	close(jobs)
	wg.Wait()
	s.Users, s.Products = len(users), len(products)
	if len(failures) > 0 {
		return s, fmt.Errorf("%d of %d reads failed; the first: %s", len(failures), len(users)+len(products), failures[0])
	}
	if len(mismatches) > 0 {
		return s, fmt.Errorf("%d of %d users' and products' counters differ from the 202 answers; the first ones:\n%s",
			len(mismatches), len(users)+len(products), strings.Join(mismatches[:min(len(mismatches), 10)], "\n"))
	}
	return s, q.checkStats(ctx, exp, s.Sum)
}

// checkStats compares the statistics of the last 24 hours, which hold every event of a
// run (its events carry no ts: their time is when ingest received them), with exp: the
// summary's counters, the sums of the minute and the hour series, and the top products
// exactly; the unique users within three standard errors of the HyperLogLog.
func (q *Query) checkStats(ctx context.Context, exp *Expected, sum Counters) error {
	var st struct {
		Events      int64 `json:"events"`
		Clicks      int64 `json:"clicks"`
		PageViews   int64 `json:"page_views"`
		DwellMs     int64 `json:"dwell_ms"`
		DwellCount  int64 `json:"dwell_count"`
		UniqueUsers int64 `json:"unique_users"`
	}
	if err := q.Get(ctx, "/v1/stats/summary?range=24h", &st); err != nil {
		return err
	}
	want := sum.Clicks + sum.PageViews + sum.DwellCount
	if st.Events != want || st.Clicks != sum.Clicks || st.PageViews != sum.PageViews || st.DwellMs != sum.DwellMs || st.DwellCount != sum.DwellCount {
		return fmt.Errorf("stats of the last 24h: %+v, want %d events, %+v", st, want, sum)
	}
	users := exp.activeUsers()
	if d := st.UniqueUsers - int64(users); d*d > int64(9*0.0081*0.0081*float64(users*users))+1 {
		return fmt.Errorf("stats of the last 24h: %d unique users, want %d within 3 standard errors", st.UniqueUsers, users)
	}
	for _, iv := range []string{"minute", "hour"} {
		var series struct {
			Points [][2]*int64 `json:"points"`
		}
		if err := q.Get(ctx, "/v1/stats/timeseries?metric=events&interval="+iv+"&range=24h", &series); err != nil {
			return err
		}
		var n int64
		for _, p := range series.Points {
			if p[1] != nil {
				n += *p[1]
			}
		}
		if n != want {
			return fmt.Errorf("the %s series of the last 24h adds up to %d events, want %d", iv, n, want)
		}
	}
	var top struct {
		Products []Counters `json:"products"`
	}
	if err := q.Get(ctx, "/v1/stats/top-products?range=24h&limit=100", &top); err != nil {
		return err
	}
	for _, p := range top.Products {
		want := exp.Product(p.ProductID)
		if p.Clicks != want.Clicks || p.PageViews != want.PageViews {
			return fmt.Errorf("top products of the last 24h: %s has %d clicks and %d page views, want %d and %d",
				p.ProductID, p.Clicks, p.PageViews, want.Clicks, want.PageViews)
		}
	}
	return nil
}

// union returns a followed by the elements of b not in a.
func union(a, b []string) []string {
	in := make(map[string]bool, len(a))
	for _, s := range a {
		in[s] = true
	}
	out := append([]string(nil), a...)
	for _, s := range b {
		if !in[s] {
			out = append(out, s)
			in[s] = true
		}
	}
	return out
}
