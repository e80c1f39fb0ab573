package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
	"github.com/clickstream/pipeline/internal/testlog"
)

// usersBatch returns a JSON array of n events of n users, every third with an event_id.
func usersBatch(n int, idPrefix string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if i%3 == 0 {
			fmt.Fprintf(&b, `{"user_id":"u%d","product_id":"p%d","event_id":"%s%d"}`, i, i%7, idPrefix, i)
		} else {
			fmt.Fprintf(&b, `{"user_id":"u%d","product_id":"p%d"}`, i, i%7)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// partitionEvents returns the events each partition's stream holds.
func (s *ingestUnderTest) partitionEvents(t *testing.T) [][]events.Event {
	t.Helper()
	out := make([][]events.Event, s.layout.Count())
	for p, k := range s.layout.Partitions() {
		msgs, err := s.all.XRange(context.Background(), k.Stream(), "-", "+").Result()
		if err != nil {
			t.Fatalf("XRANGE %s: %v", k.Stream(), err)
		}
		for _, m := range msgs {
			var kv []string
			for f, v := range m.Values {
				kv = append(kv, f, v.(string))
			}
			ev, err := events.DecodeEntry(kv)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = append(out[p], ev)
		}
	}
	return out
}

// checkPartitioned checks that the partitions hold want events in all, each in its
// user's partition, and that the single stream of one partition holds none.
func (s *ingestUnderTest) checkPartitioned(t *testing.T, want int) {
	t.Helper()
	total := 0
	for p, evs := range s.partitionEvents(t) {
		for _, ev := range evs {
			if got := s.layout.PartitionOf(ev.UserID); got != p {
				t.Fatalf("user %s's event is in partition %d, want %d", ev.UserID, p, got)
			}
		}
		total += len(evs)
	}
	if total != want {
		t.Errorf("the partitions hold %d events, want %d", total, want)
	}
	if n := s.all.Exists(context.Background(), s.keys.Stream()).Val(); n != 0 {
		t.Errorf("the single stream %s exists beside the partitions", s.keys.Stream())
	}
}

// With STREAM_PARTITIONS=6 on one Redis, every event goes to its user's partition, a
// resent batch is all duplicates (a retry meets its marker in the same partition), and
// the partition count is recorded: an ingest with another count refuses to start,
// saying why and what to do.
func TestPartitionedWrites(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"STREAM_PARTITIONS": "6"})
	body := usersBatch(300, "e-")
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 300}) {
		t.Fatalf("first post: %+v, want 300 accepted", got)
	}
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 200, Duplicates: 100}) {
		t.Fatalf("resent: %+v, want the 100 events with event_id duplicates and the 200 without written again", got)
	}
	svc.checkPartitioned(t, 500)
	for p, evs := range svc.partitionEvents(t) {
		if len(evs) == 0 {
			t.Errorf("partition %d holds nothing of 300 users", p)
		}
	}
	if v := rs.Client().Get(context.Background(), svc.layout.CountKey()).Val(); v != "6" {
		t.Errorf("%s = %q, want 6", svc.layout.CountKey(), v)
	}

	// Another partition count on the same namespace does not start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	vars := map[string]string{"REDIS_URL": rs.URL(), "REDIS_NAMESPACE": svc.layout.Namespace(), "STREAM_PARTITIONS": "3"}
	err = runWith(context.Background(), func(k string) string { return vars[k] }, &testlog.Buffer{}, ln)
	if err == nil || !strings.Contains(err.Error(), "STREAM_PARTITIONS=6") || !strings.Contains(err.Error(), "Start it with STREAM_PARTITIONS=6") {
		t.Errorf("ingest with 3 partitions on a namespace of 6: %v, want a refusal naming both counts", err)
	}
}

// On a cluster of three masters with six partitions, a batch spread over every
// partition is written, each event on the master of its user's partition, and resent
// it is all duplicates. WRITE_REPLICAS=1 answers 202 only once the replica of each
// master holds the events: with a replica frozen, a write to its master is a 503 once
// WAIT times out, never a hang and never a 202 (WAIT must run on the connection that
// wrote: a WAIT anywhere else counts the frozen replica, which holds everything that
// connection wrote). Its retry through another ingest, on a connection that wrote
// before the first copy, is a duplicate, which still may not be a 202 while the first
// copy is unconfirmed; once the replica runs again, the retry is a 202. More replicas
// asked for than there are is a 503 too.
func TestPartitionedWritesOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3, redistest.Replicas(1))
	ctx := context.Background()

	env := map[string]string{"STREAM_PARTITIONS": "6", "WRITE_REPLICAS": "1", "REDIS_TIMEOUT": "2s"}
	svc := startIngestOn(t, c.URL(), c.Client(), env)
	body := usersBatch(300, "c-")
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 300}) {
		t.Fatalf("first post: %+v, want 300 accepted", got)
	}
	// The 202 came after WAIT 1: every partition's replica has its events already.
	for p, k := range svc.layout.Partitions() {
		master := c.NodeFor(k.Stream())
		want, err := master.Client().XLen(ctx, k.Stream()).Result()
		if err != nil || want == 0 {
			t.Fatalf("partition %d on its master %s: XLEN %d, %v", p, master.Addr(), want, err)
		}
		replica := c.ReplicaOf(master)
		if got, err := replicaXLen(ctx, replica, k.Stream()); got != want {
			t.Errorf("partition %d: its replica %s holds %d entries right after the 202 (%v), its master %d", p, replica.Addr(), got, err, want)
		}
	}
	if got := accepted(t, svc.post(t, "/v1/events", "application/json", body, false)); got != (Accepted{Accepted: 200, Duplicates: 100}) {
		t.Fatalf("resent: %+v", got)
	}
	svc.checkPartitioned(t, 500)

	// A second ingest writes to u1's master: its connection there is older than the
	// write below and wrote nothing since.
	env2 := map[string]string{"REDIS_NAMESPACE": svc.layout.Namespace()}
	for k, v := range env {
		env2[k] = v
	}
	other := startIngestOn(t, c.URL(), c.Client(), env2)
	accepted(t, other.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1","event_id":"warm-1"}`, false))

	// Freeze the replica of u1's master.
	const event = `{"user_id":"u1","product_id":"p1","event_id":"frozen-1"}`
	replica := c.ReplicaOf(c.NodeFor(svc.layout.ForUser("u1").Stream()))
	replica.Stop()
	start := time.Now()
	a := svc.post(t, "/v1/events", "application/json", event, false)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		replica.Cont()
		t.Fatalf("a write whose master's replica is frozen: %d %s, want 503 with Retry-After", a.status, a.body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the 503 took %v", took)
	}
	if b := other.post(t, "/v1/events", "application/json", event, false); b.status != http.StatusServiceUnavailable {
		replica.Cont()
		t.Fatalf("its retry through another ingest while the replica is still frozen: %d %s, want 503", b.status, b.body)
	}
	replica.Cont()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := other.post(t, "/v1/events", "application/json", event, false)
		if b.status == http.StatusAccepted {
			if got := accepted(t, b); got != (Accepted{Duplicates: 1}) {
				t.Errorf("the retry once the replica runs: %+v, want a duplicate", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry still gets %d %s 30 s after the replica runs again", b.status, b.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	svc.checkPartitioned(t, 502)

	// Two replicas asked for, one per master there: WAIT times out, 503 with Retry-After.
	env2["WRITE_REPLICAS"] = "2"
	two := startIngestOn(t, c.URL(), c.Client(), env2)
	a = two.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1","event_id":"w2"}`, false)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Fatalf("WRITE_REPLICAS=2 with one replica: %d %s, want 503 with Retry-After", a.status, a.body)
	}
	if e := errorOf(t, a); !strings.Contains(*e.Error, "storage unavailable") {
		t.Errorf("503 body %q, want storage unavailable", *e.Error)
	}
}

// replicaXLen is XLEN of key on a cluster replica (READONLY: a replica answers MOVED to
// a connection that has not asked to read from it).
func replicaXLen(ctx context.Context, n *redistest.Node, key string) (int64, error) {
	conn := n.Client().Conn()
	defer conn.Close()
	if err := conn.ReadOnly(ctx).Err(); err != nil {
		return 0, err
	}
	return conn.XLen(ctx, key).Result()
}

// With several partitions MAX_LAG holds the lags of every partition's current group
// added up: three partitions each 2 entries behind, none alone past MAX_LAG 5, refuse
// events together.
func TestBackpressureLagSummedOverPartitions(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	svc := startIngest(t, rs, map[string]string{"STREAM_PARTITIONS": "3", "MAX_LAG": "5", "BACKPRESSURE_INTERVAL": "50ms"})
	ctx := context.Background()
	// Let ingest record the count first: a group created on a partition's stream is not
	// an event stored, but the check looks only at the count key and the single stream.
	accepted(t, svc.post(t, "/v1/events", "application/json", `{"user_id":"first","product_id":"p"}`, false))
	for _, k := range svc.layout.Partitions() {
		if err := rs.Client().XGroupCreateMkStream(ctx, k.Stream(), k.Gen(1).Group(), "$").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Two events for a user of each partition.
	var body strings.Builder
	body.WriteByte('[')
	for p := range 3 {
		n := 0
		for i := 0; n < 2; i++ {
			u := fmt.Sprintf("u%d", i)
			if svc.layout.PartitionOf(u) != p {
				continue
			}
			if body.Len() > 1 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"user_id":%q,"product_id":"p"}`, u)
			n++
		}
	}
	body.WriteByte(']')
	accepted(t, svc.post(t, "/v1/events", "application/json", body.String(), false))
	c := svc.newClient(10 * time.Second)
	svc.waitReady(t, c, 200, behindBy(6), func(r readyState) bool {
		return r.status == http.StatusServiceUnavailable && r.Reason == behindBy(6)
	})
	refused(t, "POST while 6 behind over three partitions", svc.post(t, "/v1/events", "application/json", `{"user_id":"u1","product_id":"p1"}`, false), behindRe)
}
