// Package metricstest reads a service's /metrics in tests.
package metricstest

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Samples are the samples of one scrape, by series, written as the text exposition
// writes them: the name, then the labels sorted by name, e.g.
// `http_requests_total{method="POST",route="/v1/events",status="202"}`.
type Samples map[string]float64

// Scrape GETs url (a /metrics endpoint) and returns its samples, failing the test if
// the answer is not a 200 in the text format.
func Scrape(t testing.TB, url string) Samples {
	t.Helper()
	s, err := TryScrape(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TryScrape is Scrape for goroutines other than the test's.
func TryScrape(url string) (Samples, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	s, err := Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return s, nil
}

// Parse reads the Prometheus text exposition format (without timestamps, as
// client_golang writes it).
func Parse(r io.Reader) (Samples, error) {
	s := Samples{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("malformed sample %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("malformed sample %q: %w", line, err)
		}
		s[line[:i]] = v
	}
	return s, sc.Err()
}

// Check reports every series of want whose value in s differs, or that s lacks.
func (s Samples) Check(t testing.TB, want map[string]float64) {
	t.Helper()
	for series, w := range want {
		got, ok := s[series]
		switch {
		case !ok:
			t.Errorf("%s: missing, want %g", series, w)
		case got != w:
			t.Errorf("%s = %g, want %g", series, got, w)
		}
	}
}
