package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// echo's and go-redis's own log lines come out of the service's logger, so with
// LOG_FORMAT=json every line on stderr is JSON.
func TestLibraryLogsGoThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	e := New(logger, func(context.Context) error { return nil })
	e.Logger.Error("echo says something")
	RedisLog{Logger: logger}.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "refused")

	want := []struct{ level, msg, source string }{
		{"ERROR", "echo says something", "echo"},
		{"WARN", "redis: connection pool: failed to dial after 5 attempts: refused", "go-redis"},
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		var got struct{ Level, Msg, Source string }
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		if got.Level != want[i].level || got.Msg != want[i].msg || got.Source != want[i].source {
			t.Errorf("line %d = %+v, want %+v", i, got, want[i])
		}
	}
}
