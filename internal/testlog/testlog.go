// Package testlog gives in-process service tests somewhere to send a service's log.
//
// A service started by a test logs from its own goroutines, some of which may still
// be writing after the test has finished; writing to t.Log then would panic. So the
// test hands the service a Buffer instead and prints it only when the test fails.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer that any number of goroutines may write to and read from at
// once. The zero value is an empty buffer ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer; it never fails.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
