package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clickstream/pipeline/events"
	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"
)

// The reference servers the project's ingest is compared with. Each runs as its own
// process (the bench binary re-executed with -serve), like the project's ingest.

// serve runs a reference server until the process is killed.
//   - null: decode + validate + 202, no Redis: the ceiling for any ingest on this machine.
//   - naive: the same plus one XADD round trip per request, the obvious design.
func serve(kind, addr, redisURL string) error {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	var rdb *redis.Client
	if kind == "naive" {
		opt, err := redis.ParseURL(redisURL)
		if err != nil {
			return err
		}
		opt.PoolSize = 128
		rdb = redis.NewClient(opt)
	}
	stream := events.NewKeys("naive").Stream()
	e.POST("/v1/events", func(c echo.Context) error {
		body := make([]byte, 0, 512)
		buf := make([]byte, 512)
		for {
			n, err := c.Request().Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		evs, err := events.DecodeRequest(body, events.JSON, 1000, time.Now())
		if err != nil {
			return c.JSON(http.StatusBadRequest, map[string]string{"error": err.Error()})
		}
		if rdb != nil {
			for i := range evs {
				if err := rdb.XAdd(c.Request().Context(), &redis.XAddArgs{Stream: stream, Values: evs[i].AppendFields(nil)}).Err(); err != nil {
					return c.JSON(http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
				}
			}
		}
		return c.JSON(http.StatusAccepted, map[string]int{"accepted": len(evs), "duplicates": 0})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return http.Serve(ln, e)
}

// peerScript is the watermill peer's idempotent apply: one call per message, deduped by
// a marker on the message's UUID (watermill does not give the handler the entry ID).
var peerScript = redis.NewScript(`
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', 86400) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[1], ARGV[2])
  return 1
end
return 0`)

// watermillPeer measures a processor written the idiomatic watermill way: a Router with
// a redisstream Subscriber per consumer and a handler that applies each message with
// one idempotent script call. It reads a stream written in watermill's own format
// (uuid + metadata + payload), runs for d, and returns messages handled per second.
func watermillPeer(rdb *redis.Client, stream string, consumers int, d time.Duration) (float64, error) {
	logger := watermill.NopLogger{}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, logger)
	if err != nil {
		return 0, err
	}
	var handled atomic.Int64
	pre := "{peer}:agg:"
	for i := 0; i < consumers; i++ {
		sub, err := redisstream.NewSubscriber(redisstream.SubscriberConfig{
			Client:        rdb,
			Consumer:      "peer-" + strconv.Itoa(i),
			ConsumerGroup: "peer",
			OldestId:      "0",
		}, logger)
		if err != nil {
			return 0, err
		}
		router.AddConsumerHandler("apply-"+strconv.Itoa(i), stream, sub, func(msg *message.Message) error {
			kv := msg.Metadata
			field := events.FieldClicks
			if kv.Get("type") == "page_view" {
				field = events.FieldPageViews
			}
			keys := []string{"{peer}:seen:" + msg.UUID, pre + "u:" + kv.Get("user_id"), pre + "p:" + kv.Get("product_id")}
			if err := peerScript.Run(msg.Context(), rdb, keys, field, 1).Err(); err != nil {
				return err
			}
			handled.Add(1)
			return nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx) }()
	<-router.Running()
	// Measure from the first handled message, so subscriber start-up is not counted.
	for handled.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start, n0 := time.Now(), handled.Load()
	time.Sleep(d)
	rate := float64(handled.Load()-n0) / time.Since(start).Seconds()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return rate, err
	}
	return rate, nil
}

// publishWatermill writes n events to stream in watermill's envelope, pipelined.
func publishWatermill(ctx context.Context, rdb *redis.Client, stream string, n int, ev func(i int) events.Event) error {
	m := redisstream.DefaultMarshallerUnmarshaller{}
	pipe := rdb.Pipeline()
	for i := 0; i < n; i++ {
		e := ev(i)
		msg := message.NewMessage(watermill.NewUUID(), nil)
		msg.Metadata.Set("user_id", e.UserID)
		msg.Metadata.Set("product_id", e.ProductID)
		msg.Metadata.Set("type", e.Type.String())
		vals, err := m.Marshal(stream, msg)
		if err != nil {
			return err
		}
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: vals})
		if pipe.Len() == 1000 || i == n-1 {
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("preload watermill stream: %w", err)
			}
		}
	}
	return nil
}
