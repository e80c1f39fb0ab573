package faults

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/clickstream/pipeline/internal/workload"
	"github.com/redis/go-redis/v9"
)

// deadLetter is the payload of a dead-letter message (see processor/deadletter.go).
type deadLetter struct {
	Stream     string   `json:"stream"`
	OriginalID string   `json:"original_id"`
	Reason     string   `json:"reason"`
	Fields     []string `json:"fields"`
}

// TestPoisonEntries writes entries the processor cannot decode straight into the
// stream, as another program might, while ingest's traffic flows. Each is published to
// the dead-letter stream with its original id and the reason, and acked; everything
// else is applied exactly.
func TestPoisonEntries(t *testing.T) {
	const nEvents = 60_000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startPipeline(ctx, t, setup{processors: 2})
	src := workload.NewSource(5, "pe-", users, products)
	exp := workload.NewExpected()
	poster := p.poster(exp)
	l := postAll(ctx, poster, src.Batches(nEvents, batchMin, batchMax), clients, nil)

	poison := []map[string]any{
		{"junk": "fields", "more": "\xff\x00binary"},                          // not an entry at all
		{"u": "{evil}", "p": "prod-001", "k": "c"},                            // an id that would change a key's slot
		{"u": "user-0001", "p": "prod-001", "k": "d", "d": "-5"},              // a dwell of negative length
		{"u": "user-0001", "p": "prod-001", "k": "c", "e": "x", "extra": "1"}, // an unknown field
	}
	var ids []string
	for i, fields := range poison {
		if err := waitEvents(ctx, poster, l, int64(i+1)*nEvents/int64(len(poison)+1)); err != nil {
			t.Fatal(err)
		}
		id, err := p.rdb.XAdd(ctx, &redis.XAddArgs{Stream: p.keys.Stream(), Values: fields}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := l.wait(); err != nil {
		t.Fatal(err)
	}
	p.check(verdict{scenario: "e. poison entries in the stream", src: src, exp: exp, poster: poster,
		extra: int64(len(poison)), deadLetter: int64(len(poison)),
		more: func(pl workload.Pipeline) { checkDeadLetters(ctx, t, p, pl.DeadLetter.Stream, ids) }})
}

// checkDeadLetters checks that the dead-letter stream holds one watermill message per
// entry in ids, naming its original id, the stream and why it was rejected.
func checkDeadLetters(ctx context.Context, t *testing.T, p *pipeline, stream string, ids []string) {
	t.Helper()
	msgs, err := p.rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range msgs {
		wm, err := redisstream.DefaultMarshallerUnmarshaller{}.Unmarshal(m.Values)
		if err != nil {
			t.Errorf("dead letter %s is not a watermill message: %v", m.ID, err)
			continue
		}
		var dl deadLetter
		if err := json.Unmarshal(wm.Payload, &dl); err != nil {
			t.Errorf("dead letter %s: payload %q: %v", m.ID, wm.Payload, err)
			continue
		}
		if dl.Stream != p.keys.Stream() || dl.Reason == "" || wm.Metadata.Get("original_id") != dl.OriginalID {
			t.Errorf("dead letter %s: payload %+v, metadata %v; want stream %s, a reason, and original_id in both",
				m.ID, dl, wm.Metadata, p.keys.Stream())
		}
		t.Logf("dead letter for %s: %s", dl.OriginalID, dl.Reason)
		got = append(got, dl.OriginalID)
	}
	want := slices.Clone(ids)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("dead letters name entries %v, want the poison entries %v", got, want)
	}
}
