package main

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-redisstream/pkg/redisstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/clickstream/pipeline/internal/aggregate"
	"github.com/redis/go-redis/v9"
)

// DeadLetters publishes entries the processor cannot decode to the dead-letter stream.
// The stream is an ordinary watermill topic (watermill-redisstream's format), so users
// can read it with their own watermill subscribers. Volume here is tiny; the hot path
// does not go through watermill (see README, "What uses watermill").
type DeadLetters struct {
	stream string // the stream the bad entries came from
	topic  string
	pub    *redisstream.Publisher
}

// DeadLetter is the payload of a dead-letter message.
type DeadLetter struct {
	Stream     string   `json:"stream"`
	OriginalID string   `json:"original_id"`
	Reason     string   `json:"reason"`
	Fields     []string `json:"fields"` // the entry's field/value pairs as read
}

// Metadata keys of a dead-letter message, so subscribers can filter without parsing.
const (
	MetaOriginalID = "original_id"
	MetaReason     = "reason"
)

// NewDeadLetters returns a publisher to topic.
func NewDeadLetters(rdb redis.UniversalClient, stream, topic string, logger *slog.Logger) (*DeadLetters, error) {
	pub, err := redisstream.NewPublisher(redisstream.PublisherConfig{Client: rdb}, watermill.NewSlogLogger(logger))
	if err != nil {
		return nil, err
	}
	return &DeadLetters{stream: stream, topic: topic, pub: pub}, nil
}

// Publish writes one bad entry with the reason it was rejected and its original id.
// A crash between Publish and the ack that follows can publish an entry twice: the
// dead-letter stream is at-least-once.
func (d *DeadLetters) Publish(ctx context.Context, e aggregate.Entry) error {
	payload, err := json.Marshal(DeadLetter{Stream: d.stream, OriginalID: e.ID, Reason: e.Bad.Error(), Fields: e.Fields})
	if err != nil {
		return err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.Metadata.Set(MetaOriginalID, e.ID)
	msg.Metadata.Set(MetaReason, e.Bad.Error())
	msg.SetContext(ctx)
	return d.pub.Publish(d.topic, msg)
}
