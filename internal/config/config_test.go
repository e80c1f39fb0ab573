package config

import (
	"crypto/tls"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// REDIS_URL with a password reaches the client, rediss:// turns TLS on, and the URL
// that is logged shows no password.
func TestRedisURL(t *testing.T) {
	cases := []struct {
		url            string
		addr, network  string
		user, password string
		db             int
		tls            bool
		masked         string
	}{
		{url: "redis://:s3cret@redis.internal:6379/0", addr: "redis.internal:6379", network: "tcp",
			password: "s3cret", masked: "redis://:xxxxx@redis.internal:6379/0"},
		{url: "redis://ingest:s3cret@10.0.0.5:6380/2", addr: "10.0.0.5:6380", network: "tcp",
			user: "ingest", password: "s3cret", db: 2, masked: "redis://ingest:xxxxx@10.0.0.5:6380/2"},
		{url: "rediss://default:s3cret@cache.example.com:6380/0", addr: "cache.example.com:6380", network: "tcp",
			user: "default", password: "s3cret", tls: true, masked: "rediss://default:xxxxx@cache.example.com:6380/0"},
		{url: "rediss://cache.example.com:6380", addr: "cache.example.com:6380", network: "tcp",
			tls: true, masked: "rediss://cache.example.com:6380"},
		{url: "unix://:s3cret@/run/redis/redis.sock", addr: "/run/redis/redis.sock", network: "unix",
			password: "s3cret", masked: "unix://:xxxxx@/run/redis/redis.sock"},
		{url: "redis://127.0.0.1:6379/0", addr: "127.0.0.1:6379", network: "tcp", masked: "redis://127.0.0.1:6379/0"},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			r := NewReader(env(map[string]string{"REDIS_URL": tc.url}))
			uopt := r.Redis()
			if err := r.Err(); err != nil {
				t.Fatalf("Redis(): %v", err)
			}
			// One address: redis.NewUniversalClient builds a single-node client.
			rdb, ok := redis.NewUniversalClient(uopt).(*redis.Client)
			if !ok {
				t.Fatalf("NewUniversalClient(Redis()) is a %T, want a single-node *redis.Client", redis.NewUniversalClient(uopt))
			}
			defer rdb.Close()
			opt := rdb.Options()
			if opt.Addr != tc.addr || opt.Network != tc.network || opt.Username != tc.user || opt.Password != tc.password || opt.DB != tc.db {
				t.Errorf("options addr=%q network=%q user=%q password=%q db=%d, want %q %q %q %q %d",
					opt.Addr, opt.Network, opt.Username, opt.Password, opt.DB, tc.addr, tc.network, tc.user, tc.password, tc.db)
			}
			if got := opt.TLSConfig != nil; got != tc.tls {
				t.Fatalf("TLS on = %v, want %v", got, tc.tls)
			}
			if tc.tls {
				host, _, _ := strings.Cut(tc.addr, ":")
				if opt.TLSConfig.ServerName != host || opt.TLSConfig.MinVersion != tls.VersionTLS12 || opt.TLSConfig.InsecureSkipVerify {
					t.Errorf("TLS config server name %q, min version %x, skip verify %v; want %q, TLS 1.2, false",
						opt.TLSConfig.ServerName, opt.TLSConfig.MinVersion, opt.TLSConfig.InsecureSkipVerify, host)
				}
			}
			if got := MaskURL(tc.url); got != tc.masked {
				t.Errorf("MaskURL = %q, want %q", got, tc.masked)
			}
		})
	}
}

// Every option a REDIS_URL can set (its query parameters too) reaches the client that
// redis.NewUniversalClient builds from Redis(), as it reaches one built from
// redis.ParseURL directly; only the protocol is RESP2 whatever the URL says.
func TestRedisURLOptionsReachTheClient(t *testing.T) {
	query := "?client_name=cs&max_retries=2&min_retry_backoff=3ms&max_retry_backoff=4ms&dial_timeout=5s" +
		"&read_timeout=6s&write_timeout=7s&pool_fifo=true&pool_size=8&pool_timeout=9s&min_idle_conns=1" +
		"&max_idle_conns=3&max_active_conns=11&max_concurrent_dials=2&pipeline_pool_size=4" +
		"&pipeline_read_buffer_size=4096&pipeline_write_buffer_size=8192&conn_max_idle_time=12s" +
		"&conn_max_lifetime=13s&conn_max_lifetime_jitter=1s"
	for _, raw := range []string{
		"redis://u:pw@10.0.0.5:6380/2" + query,
		"rediss://u:pw@cache.example.com:6380/0" + query + "&skip_verify=true",
		"unix://:pw@/run/redis/redis.sock" + query + "&db=3",
		"redis://127.0.0.1:6379/0",
	} {
		t.Run(raw, func(t *testing.T) {
			r := NewReader(env(map[string]string{"REDIS_URL": raw}))
			uopt := r.Redis()
			if err := r.Err(); err != nil {
				t.Fatalf("Redis(): %v", err)
			}
			got := redis.NewUniversalClient(uopt).(*redis.Client)
			defer got.Close()
			direct, err := redis.ParseURL(raw)
			if err != nil {
				t.Fatal(err)
			}
			direct.Protocol = 2
			want := redis.NewClient(direct)
			defer want.Close()
			// Compare every option but the functions init fills in (the dialer).
			g, w := reflect.ValueOf(*got.Options()), reflect.ValueOf(*want.Options())
			for i := range g.NumField() {
				f := g.Type().Field(i)
				if f.Type.Kind() == reflect.Func || !f.IsExported() {
					continue
				}
				if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
					t.Errorf("%s = %v, want %v (as redis.ParseURL sets it)", f.Name, g.Field(i), w.Field(i))
				}
			}
		})
	}
}

// A REDIS_URL that does not parse is reported naming the variable, and neither the
// error nor the masked URL shows the password (net/url's own errors quote the URL).
func TestBadRedisURLHidesPassword(t *testing.T) {
	for _, raw := range []string{
		"redis://:s3cret@host:notaport/0",
		"redis://user:s3cret@[::1/0",
		"redis://:s3cret@host:6379/x",
		"http://:s3cret@host:6379/0",
	} {
		r := NewReader(env(map[string]string{"REDIS_URL": raw}))
		r.Redis()
		err := r.Err()
		if err == nil {
			t.Errorf("REDIS_URL=%s: no error", raw)
			continue
		}
		if !strings.Contains(err.Error(), "REDIS_URL=") {
			t.Errorf("REDIS_URL=%s: error %q does not name REDIS_URL", raw, err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("REDIS_URL=%s: error shows the password: %q", raw, err)
		}
		if m := MaskURL(raw); strings.Contains(m, "s3cret") {
			t.Errorf("MaskURL(%s) = %q shows the password", raw, m)
		}
	}
}

func TestKeys(t *testing.T) {
	cases := []struct {
		val  string
		want []string
		err  string // a substring of the error; "" for none
	}{
		{val: "", want: nil},
		{val: "wk_live_1", want: []string{"wk_live_1"}},
		{val: "wk_a,wk_b", want: []string{"wk_a", "wk_b"}},
		{val: " wk_a , ,wk_b ,", want: []string{"wk_a", "wk_b"}},
		{val: ",", err: "INGEST_KEYS is set but holds no key"},
		{val: " , ", err: "INGEST_KEYS is set but holds no key"},
		{val: "wk_a,wk:secret", err: "INGEST_KEYS: key 2 contains ':'"},
		{val: "wk\tsecret", err: "INGEST_KEYS: key 1 contains"},
	}
	for _, tc := range cases {
		r := NewReader(env(map[string]string{"INGEST_KEYS": tc.val}))
		got := r.Keys("INGEST_KEYS")
		err := r.Err()
		if tc.err == "" {
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("INGEST_KEYS=%q: %q, %v; want %q, no error", tc.val, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("INGEST_KEYS=%q: error %v, want one containing %q", tc.val, err, tc.err)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("INGEST_KEYS=%q: error %q shows a key", tc.val, err)
		}
	}
}

func TestFraction(t *testing.T) {
	cases := []struct {
		val  string
		want float64
		ok   bool
	}{
		{"", 0.9, true}, {"0.5", 0.5, true}, {"1", 1, true}, {"0.001", 0.001, true},
		{"0", 0.9, false}, {"-0.1", 0.9, false}, {"1.01", 0.9, false}, {"90%", 0.9, false}, {"NaN", 0.9, false},
	}
	for _, tc := range cases {
		r := NewReader(env(map[string]string{"MAX_REDIS_MEMORY": tc.val}))
		got := r.Fraction("MAX_REDIS_MEMORY", 0.9)
		err := r.Err()
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("MAX_REDIS_MEMORY=%q: %v, %v; want %v, ok %v", tc.val, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), `MAX_REDIS_MEMORY="`+tc.val+`"`) {
			t.Errorf("MAX_REDIS_MEMORY=%q: error %q does not name the variable", tc.val, err)
		}
	}
}

func TestHTTPTimeouts(t *testing.T) {
	r := NewReader(env(nil))
	if got := r.HTTPTimeouts(); got != DefaultHTTPTimeouts || r.Err() != nil {
		t.Errorf("defaults: %+v %v, want %+v", got, r.Err(), DefaultHTTPTimeouts)
	}
	if DefaultHTTPTimeouts.Read != 10*time.Second {
		t.Errorf("default HTTP_READ_TIMEOUT %v, want 10s", DefaultHTTPTimeouts.Read)
	}
	r = NewReader(env(map[string]string{
		"HTTP_READ_HEADER_TIMEOUT": "1s", "HTTP_READ_TIMEOUT": "500ms",
		"HTTP_WRITE_TIMEOUT": "3s", "HTTP_IDLE_TIMEOUT": "1m",
	}))
	want := HTTPTimeouts{ReadHeader: time.Second, Read: 500 * time.Millisecond, Write: 3 * time.Second, Idle: time.Minute}
	if got := r.HTTPTimeouts(); got != want || r.Err() != nil {
		t.Errorf("set: %+v %v, want %+v", got, r.Err(), want)
	}
	r = NewReader(env(map[string]string{"HTTP_READ_TIMEOUT": "10", "HTTP_IDLE_TIMEOUT": "1ms"}))
	r.HTTPTimeouts()
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), `HTTP_READ_TIMEOUT="10"`) || !strings.Contains(err.Error(), `HTTP_IDLE_TIMEOUT="1ms"`) {
		t.Errorf("bad values: error %v, want one naming HTTP_READ_TIMEOUT and HTTP_IDLE_TIMEOUT", err)
	}
}

// Bool reads true and false (and 1, 0); anything else is an error naming the variable.
func TestBool(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": true, "1": true, "TRUE": true, "false": false, "0": false} {
		r := NewReader(env(map[string]string{"ALLOW_EVICTION": v}))
		if got := r.Bool("ALLOW_EVICTION", false); got != want || r.Err() != nil {
			t.Errorf("ALLOW_EVICTION=%q: %v, %v; want %v", v, got, r.Err(), want)
		}
	}
	r := NewReader(env(map[string]string{"ALLOW_EVICTION": "yes please"}))
	r.Bool("ALLOW_EVICTION", false)
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), `ALLOW_EVICTION="yes please": want true or false`) {
		t.Errorf("ALLOW_EVICTION=yes please: %v, want an error naming the variable", err)
	}
}

// A REDIS_URL in go-redis's cluster form (an addr parameter) builds a cluster client
// whose options are the ones redis.ParseClusterURL reads from it, every seed address
// included; the password is masked in the log form.
func TestRedisClusterURL(t *testing.T) {
	query := "&client_name=cs&max_retries=2&min_retry_backoff=3ms&max_retry_backoff=4ms&dial_timeout=5s" +
		"&read_timeout=6s&write_timeout=7s&pool_fifo=true&pool_size=8&pool_timeout=9s&min_idle_conns=1" +
		"&max_idle_conns=3&max_active_conns=11&max_concurrent_dials=2&conn_max_idle_time=12s" +
		"&conn_max_lifetime=13s&max_redirects=5"
	for _, raw := range []string{
		"redis://u:s3cret@10.0.0.5:7000?addr=10.0.0.6:7001&addr=10.0.0.7:7002" + query,
		"rediss://u:s3cret@cache.example.com:7000?addr=cache.example.com:7001",
		"redis://127.0.0.1:7000?addr=127.0.0.1:7000",
	} {
		t.Run(raw, func(t *testing.T) {
			if !IsClusterURL(raw) {
				t.Fatalf("IsClusterURL = false")
			}
			r := NewReader(env(map[string]string{"REDIS_URL": raw}))
			uopt := r.Redis()
			if err := r.Err(); err != nil {
				t.Fatalf("Redis(): %v", err)
			}
			got, ok := redis.NewUniversalClient(uopt).(*redis.ClusterClient)
			if !ok {
				t.Fatalf("NewUniversalClient(Redis()) is a %T, want a *redis.ClusterClient", redis.NewUniversalClient(uopt))
			}
			defer got.Close()
			want, err := redis.ParseClusterURL(raw)
			if err != nil {
				t.Fatal(err)
			}
			want.Protocol = 2
			if want.TLSConfig != nil {
				want.TLSConfig.MinVersion = tls.VersionTLS12
			}
			wc := redis.NewClusterClient(want)
			defer wc.Close()
			g, w := reflect.ValueOf(*got.Options()), reflect.ValueOf(*wc.Options())
			for i := range g.NumField() {
				f := g.Type().Field(i)
				if f.Type.Kind() == reflect.Func || !f.IsExported() || f.Name == "ClusterStateReloadInterval" {
					continue
				}
				if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
					t.Errorf("%s = %v, want %v (as redis.ParseClusterURL sets it)", f.Name, g.Field(i), w.Field(i))
				}
			}
			if m := MaskURL(raw); strings.Contains(m, "s3cret") {
				t.Errorf("MaskURL = %q shows the password", m)
			}
		})
	}
	for _, raw := range []string{"redis://h:7000?addr=nohostport", "redis://h:7000?addr=h:7001&bogus=1"} {
		r := NewReader(env(map[string]string{"REDIS_URL": raw}))
		r.Redis()
		if err := r.Err(); err == nil || !strings.Contains(err.Error(), "REDIS_URL=") || !strings.Contains(err.Error(), "cluster") {
			t.Errorf("REDIS_URL=%s: error %v, want one naming REDIS_URL and the cluster form", raw, err)
		}
	}
}
