package aggregate

import (
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The JSON names are those of the query API's answers.
func TestTotalsJSON(t *testing.T) {
	b, err := json.Marshal(Totals{Clicks: 1, PageViews: 2, DwellMs: 3, DwellCount: 4})
	if want := `{"clicks":1,"page_views":2,"dwell_ms":3,"dwell_count":4}`; err != nil || string(b) != want {
		t.Errorf("json.Marshal = %s, %v; want %s", b, err, want)
	}
}

func TestParseTotals(t *testing.T) {
	for _, tc := range []struct {
		name string
		vals []any
		want Totals
	}{
		{"never seen", []any{nil, nil, nil, nil}, Totals{}},
		{"every field", []any{"1", "2", "3", "4"}, Totals{1, 2, 3, 4}},
		{"a product: no clicks field", []any{nil, "7", "86400000", "1"}, Totals{PageViews: 7, DwellMs: 86_400_000, DwellCount: 1}},
		{"short reply", []any{"5"}, Totals{Clicks: 5}},
	} {
		if got := ParseTotals(tc.vals); got != tc.want {
			t.Errorf("%s: ParseTotals(%v) = %+v, want %+v", tc.name, tc.vals, got, tc.want)
		}
	}
}

// Increments encoded by AppendArgs and run by the shared Lua block write exactly the
// events' totals: a user's counters in its hash, a product's in its hash but for its
// clicks, which are only in the ranking; no field for a zero counter, no hash for a
// product that only has clicks. Reset forgets the previous batch.
func TestIncrementsThroughScript(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	keys := events.NewKeys(redistest.Namespace(t))
	gen := keys.Gen(1)
	// The increments start at ARGV[3] and KEYS[2], after arguments of the script's own.
	script := NewScript("#!lua\nredis.call('SET', KEYS[1], ARGV[1] .. ARGV[2])\napply_increments(3)\nreturn 1\n")
	marker := keys.Stream() // any key of the namespace, written by the script itself

	in := NewIncrements(gen, events.DefaultRetention)
	apply := func(evs []events.Event) {
		t.Helper()
		// Events older than every bucket's retention: only the all-time counters move.
		in.Reset(time.Now().UnixMilli())
		for i := range evs {
			in.Add(&evs[i], 1)
		}
		argv := in.AppendArgs([]any{"a", "b"}, 2)
		if err := script.Run(ctx, rdb, append([]string{marker}, in.Keys()...), argv...).Err(); err != nil {
			t.Fatalf("script: %v (argv %v)", err, argv)
		}
	}
	apply([]events.Event{
		{UserID: "u1", ProductID: "p1", Type: events.Click},
		{UserID: "u1", ProductID: "p1", Type: events.Click},
		{UserID: "u1", ProductID: "p2", Type: events.PageView},
		{UserID: "u2", ProductID: "p1", Type: events.Dwell, DurationMs: 1500},
		{UserID: "u2", ProductID: "p3", Type: events.Click},
	})
	apply([]events.Event{{UserID: "u3", ProductID: "p2", Type: events.Dwell, DurationMs: 20}})
	apply(nil) // nothing to write

	want := map[string]map[string]string{
		gen.User("u1"):    {"clicks": "2", "page_views": "1"},
		gen.User("u2"):    {"clicks": "1", "dwell_ms": "1500", "dwell_count": "1"},
		gen.User("u3"):    {"dwell_ms": "20", "dwell_count": "1"},
		gen.Product("p1"): {"dwell_ms": "1500", "dwell_count": "1"},
		gen.Product("p2"): {"page_views": "1", "dwell_ms": "20", "dwell_count": "1"},
		gen.TopProducts(): {"p1": "2", "p3": "1"},
		keys.Stream():     {"": "ab"},
	}
	if got := dump(t, rdb, strings.TrimSuffix(gen.Pattern(), "*"), keys.Stream()); !reflect.DeepEqual(got, want) {
		t.Errorf("keys after the increments:\n%v\nwant\n%v", got, want)
	}
}

// The shared block is put in after the shebang, which stays the first line: Redis
// honours its flags (here it refuses a write from a no-writes script; with the shebang
// anywhere else the script would not even compile).
func TestNewScriptKeepsTheShebangFirst(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t).Client()
	key := redistest.Namespace(t) + ":x"
	err := NewScript("#!lua flags=no-writes\nreturn redis.call('SET', KEYS[1], 'x')\n").Run(context.Background(), rdb, []string{key}).Err()
	if err == nil || !strings.Contains(err.Error(), "Write commands are not allowed") {
		t.Errorf("a no-writes script that writes: %v, want Redis to refuse the write", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("NewScript of a body without #!lua did not panic")
		}
	}()
	NewScript("return 1\n")
}

// dump reads every key with the prefix, and the extra keys: a hash's fields, a sorted
// set's scores, a string as the field "".
func dump(t *testing.T, rdb *redis.Client, prefix string, extra ...string) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	var names []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		names = append(names, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, k := range append(names, extra...) {
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			out[k] = rdb.HGetAll(ctx, k).Val()
		case "zset":
			out[k] = map[string]string{}
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				out[k][z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', -1, 64)
			}
		case "string":
			out[k] = map[string]string{"": rdb.Get(ctx, k).Val()}
		default:
			t.Fatalf("%s is a %s", k, typ)
		}
	}
	return out
}

// dumpWithExpiry is dump for every key with the prefix, reading a HyperLogLog as its
// count ("pfcount") and adding each key's absolute expiry in Unix ms ("(expires)").
func dumpWithExpiry(t *testing.T, rdb *redis.Client, prefix string) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "hash":
			out[k] = rdb.HGetAll(ctx, k).Val()
		case "zset":
			out[k] = map[string]string{}
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				out[k][z.Member.(string)] = strconv.FormatFloat(z.Score, 'f', -1, 64)
			}
		case "string":
			out[k] = map[string]string{"pfcount": strconv.FormatInt(rdb.PFCount(ctx, k).Val(), 10)}
		default:
			t.Fatalf("%s is a %s", k, typ)
		}
		if at := rdb.PExpireTime(ctx, k).Val(); at > 0 {
			out[k]["(expires)"] = strconv.FormatInt(int64(at/time.Millisecond), 10)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
