package main

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/clickstream/pipeline/events"
	"github.com/clickstream/pipeline/internal/redistest"
)

// Two processors share one group; every event, written before and while they run, is
// counted exactly once.
func TestTwoProcessorsExactTotals(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	evs := randomEvents(4, 20_000, 50, 20)
	p.xadd(t, evs[:5000])

	// A short claim time makes the two steal each other's batches in flight: exactly
	// once must hold anyway.
	env := map[string]string{"BATCH_SIZE": "250", "CLAIM_MIN_IDLE": "200ms"}
	stop1 := p.startProcessor(t, "proc-1", env)
	stop2 := p.startProcessor(t, "proc-2", env)

	rest := evs[5000:]
	var wg sync.WaitGroup
	for w := range 4 {
		part := rest[w*len(rest)/4 : (w+1)*len(rest)/4]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(part); i += 500 {
				if _, err := p.tryXadd(part[i:min(i+500, len(part))]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n, err := p.rdb.XLen(context.Background(), p.keys.Stream()).Result(); err != nil || n != int64(len(evs)) {
		t.Fatalf("stream length %d, %v; want %d", n, err, len(evs))
	}

	p.waitDrained(t)
	p.assertTotals(t, evs)
	for i, stop := range []func() error{stop1, stop2} {
		if err := stop(); err != nil {
			t.Errorf("processor %d: runWith returned %v, want nil", i+1, err)
		}
	}
	p.assertTotals(t, evs) // stopping applies nothing twice
}

// Entries the processor cannot decode go to the dead-letter topic with their id and
// reason, are acked, and do not stop the entries after them from being counted.
func TestPoisonEntriesAreDeadLettered(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	evs := randomEvents(5, 300, 8, 5)

	p.xadd(t, evs[:100])
	bad1 := p.xaddRaw(t, "foo", "bar")
	p.xadd(t, evs[100:200])
	bad2 := p.xaddRaw(t, "u", "u1", "p", "p1", "k", "d") // a dwell without its duration
	p.xadd(t, evs[200:])
	bad3 := p.xaddRaw(t, "u", "u1", "p", "p1", "k", "c", "d", "5") // a click with a duration

	p.startProcessor(t, "proc", map[string]string{"BATCH_SIZE": "64"})
	p.waitDrained(t)
	p.assertTotals(t, evs)
	if n := p.pendingFor(t, ""); n != 0 {
		t.Errorf("%d entries pending, want 0 (poison entries must be acked)", n)
	}

	msgs, err := p.rdb.XRange(context.Background(), p.keys.DeadLetter(), "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", p.keys.DeadLetter(), err)
	}
	var gotIDs []string
	for _, m := range msgs {
		// The dead-letter stream is a watermill topic: read it as watermill does.
		wm, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(m.Values)
		if err != nil {
			t.Fatalf("dead letter %s is not a watermill message: %v", m.ID, err)
		}
		var dl struct {
			Stream     string   `json:"stream"`
			OriginalID string   `json:"original_id"`
			Reason     string   `json:"reason"`
			Fields     []string `json:"fields"`
		}
		if err := json.Unmarshal(wm.Payload, &dl); err != nil {
			t.Fatalf("dead letter payload %q: %v", wm.Payload, err)
		}
		if dl.Stream != p.keys.Stream() {
			t.Errorf("dead letter %s: stream %q, want %q", dl.OriginalID, dl.Stream, p.keys.Stream())
		}
		if !strings.Contains(dl.Reason, events.ErrMalformed.Error()) {
			t.Errorf("dead letter %s: reason %q does not say the entry is malformed", dl.OriginalID, dl.Reason)
		}
		if len(dl.Fields) == 0 {
			t.Errorf("dead letter %s carries no fields", dl.OriginalID)
		}
		if md := wm.Metadata.Get(MetaOriginalID); md != dl.OriginalID {
			t.Errorf("dead letter metadata %s = %q, want %q", MetaOriginalID, md, dl.OriginalID)
		}
		gotIDs = append(gotIDs, dl.OriginalID)
	}
	// Batches are applied APPLY_CONCURRENCY at a time, so dead letters of different
	// batches may be published in either order: each must be there exactly once.
	slices.SortFunc(gotIDs, events.CompareIDs)
	if want := []string{bad1, bad2, bad3}; !reflect.DeepEqual(gotIDs, want) {
		t.Errorf("dead letters for %v, want %v", gotIDs, want)
	}
}

// A consumer that read a batch and died leaves it pending: a live processor claims and
// counts it, and removes the dead consumer once it holds nothing.
func TestDeadConsumersEntriesAreClaimed(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	evs := randomEvents(6, 1000, 12, 7)
	p.createGroup(t)
	p.xadd(t, evs)
	if got := p.readGroup(t, "dead", 300); len(got) != 300 {
		t.Fatalf("dead consumer read %d entries, want 300", len(got))
	}

	p.startProcessor(t, "live", map[string]string{
		"BATCH_SIZE": "100", "CLAIM_MIN_IDLE": "200ms", "CONSUMER_EXPIRY": "1s",
	})
	p.waitDrained(t)
	p.assertTotals(t, evs)

	var names []string
	for range 1200 { // 1200 × 25ms; a reap pass runs every second
		consumers, err := p.rdb.XInfoConsumers(context.Background(), p.keys.Stream(), p.gen.Group()).Result()
		if err != nil {
			t.Fatalf("XINFO CONSUMERS: %v", err)
		}
		names = names[:0]
		for _, c := range consumers {
			names = append(names, c.Name)
		}
		if !slices.Contains(names, "dead") {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if slices.Contains(names, "dead") {
		t.Errorf("consumer \"dead\" was never removed; consumers %v", names)
	}
	p.assertTotals(t, evs)
}

// Cancelling runWith's context (what SIGTERM does) while events flow: runWith returns
// nil, finishes what it read so that nothing is left pending for it, and a later
// processor counts the rest: every event exactly once.
func TestShutdownWhileEventsFlow(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	p := newPipeline(t, rs)
	stopA := p.startProcessor(t, "proc-a", map[string]string{"BATCH_SIZE": "50"})

	var mu sync.Mutex
	var written []events.Event
	quit := make(chan struct{})
	producerDone := make(chan struct{})
	var stopOnce sync.Once
	stopProducer := func() {
		stopOnce.Do(func() { close(quit) })
		<-producerDone
	}
	t.Cleanup(stopProducer) // also when the test fails early
	go func() {
		defer close(producerDone)
		for seed := uint64(100); ; seed++ {
			select {
			case <-quit:
				return
			default:
			}
			evs := randomEvents(seed, 20, 15, 8)
			if _, err := p.tryXadd(evs); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			written = append(written, evs...)
			mu.Unlock()
		}
	}()

	// Let proc-a get well into the flow before stopping it.
	for i := 0; ; i++ {
		groups, err := p.rdb.XInfoGroups(context.Background(), p.keys.Stream()).Result()
		if err == nil && len(groups) == 1 && groups[0].EntriesRead >= 2000 {
			break
		}
		if i == 2400 {
			t.Fatalf("proc-a never read 2000 entries: %v %v", groups, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err := stopA(); err != nil {
		t.Errorf("runWith returned %v after cancel, want nil", err)
	}
	stopProducer()
	if n := p.pendingFor(t, "proc-a"); n != 0 {
		t.Errorf("%d entries left pending for proc-a after a clean shutdown, want 0", n)
	}

	p.startProcessor(t, "proc-b", map[string]string{"BATCH_SIZE": "50", "CLAIM_MIN_IDLE": "200ms"})
	p.waitDrained(t)
	mu.Lock()
	defer mu.Unlock()
	p.assertTotals(t, written)
}
