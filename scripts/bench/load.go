package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// httpLoad drives a server with keep-alive HTTP/1.1 connections, one request in
// flight per connection. It speaks raw HTTP over net.Conn rather than net/http because
// on a 2-core machine the load generator shares the CPU with the server under test:
// the cheaper the client, the more of the machine the server gets, and every server
// in the comparison is driven by the same client.
type httpLoad struct {
	addr     string
	conns    int
	duration time.Duration
	// request returns the raw request for the i-th request of connection c.
	request func(c, i int) []byte
	// okStatus is the status every answer must have.
	okStatus int
}

type loadResult struct {
	requests int64
	errors   int64
	elapsed  time.Duration
	lat      []time.Duration
	firstErr error
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

func (l httpLoad) run() loadResult {
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		reqs     atomic.Int64
		errs     atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
	)
	start := time.Now()
	for c := 0; c < l.conns; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<16)
			var err error
			for i := 0; !stop.Load() && err == nil; {
				err = l.conn(c, &i, &stop, &reqs, &local)
			}
			mu.Lock()
			lat = append(lat, local...)
			if err != nil {
				errs.Add(1)
				if firstErr == nil {
					firstErr = err
				}
			}
			mu.Unlock()
		}(c)
	}
	time.Sleep(l.duration)
	stop.Store(true)
	elapsed := time.Since(start)
	wg.Wait()
	slices.Sort(lat)
	return loadResult{requests: reqs.Load(), errors: errs.Load(), elapsed: elapsed, lat: lat, firstErr: firstErr}
}

// conn runs requests on one connection until stop; an error ends the connection.
func (l httpLoad) conn(c int, i *int, stop *atomic.Bool, reqs *atomic.Int64, lat *[]time.Duration) error {
	nc, err := net.Dial("tcp", l.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	br := bufio.NewReaderSize(nc, 16<<10)
	for !stop.Load() {
		req := l.request(c, *i)
		*i++
		t0 := time.Now()
		if _, err := nc.Write(req); err != nil {
			return err
		}
		status, err := readResponse(br)
		if err != nil {
			return err
		}
		if status != l.okStatus {
			return fmt.Errorf("status %d, want %d", status, l.okStatus)
		}
		*lat = append(*lat, time.Since(t0))
		reqs.Add(1)
	}
	return nil
}

// readResponse reads one HTTP/1.1 response, its body sized by Content-Length or sent in
// chunks (as net/http sends an answer larger than its buffer), and returns its status.
func readResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, err
	}
	length, chunked := -1, false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && bytes.EqualFold(line[:15], []byte("Content-Length:")) {
			length, err = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			if err != nil {
				return 0, err
			}
		}
		if bytes.EqualFold(bytes.TrimSpace(line), []byte("Transfer-Encoding: chunked")) {
			chunked = true
		}
	}
	if chunked {
		return status, discardChunks(br)
	}
	if length < 0 {
		return 0, errors.New("response without Content-Length or chunks")
	}
	_, err = br.Discard(length)
	return status, err
}

// discardChunks reads a chunked body to its end: size lines in hex, each chunk followed
// by CRLF, a zero-size chunk and an empty trailer last.
func discardChunks(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		hex, _, _ := bytes.Cut(bytes.TrimSpace(line), []byte(";"))
		n, err := strconv.ParseInt(string(hex), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			_, err = br.ReadSlice('\n') // the empty trailer
			return err
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}

func postRequest(host, path, contentType string, body []byte) []byte {
	return fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s",
		path, host, contentType, len(body), body)
}

func getRequest(host, path string) []byte {
	return fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
}
