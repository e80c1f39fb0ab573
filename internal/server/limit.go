package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// LimitListener is a listener that keeps at most a fixed number of connections open at
// once (ingest's MAX_CONNECTIONS). Every connection costs memory whether or not it
// carries a request (a goroutine and its read and write buffers, about 25 KB), and
// before the limit ingest held 19,980 idle keep-alive connections, 480 MB.
//
// At the limit, a new connection is accepted from the kernel and then waits, unserved,
// until one of the open connections closes; the connections behind it wait in the
// listen backlog, and past the backlog the kernel drops SYNs, so clients back off on
// their own. Waiting was chosen over closing the new connection at once: a client that
// waits a moment gets its answer, where one that is cut off must notice and retry, and
// a burst over the limit is usually short. To keep the wait short and to stop idle
// connections from starving active clients, a connection that is idle between two
// requests is closed to make room, exactly as HTTP_IDLE_TIMEOUT would close it later:
// keep-alive clients expect that and reconnect. A connection that has sent nothing yet
// cannot be told from a slow client and keeps its place; HTTP_READ_HEADER_TIMEOUT
// bounds it.
//
// Serve hands the listener's ConnState to its http.Server, which is how the listener
// learns which connections are idle.
type LimitListener struct {
	net.Listener
	slots   chan struct{} // a token per open connection
	done    chan struct{} // closed by Close
	stop    sync.Once
	waiting atomic.Bool // Accept waits for a slot: the next connection to go idle makes room

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
}

// NewLimitListener wraps ln so that at most max connections are open at once.
func NewLimitListener(ln net.Listener, max int) *LimitListener {
	return &LimitListener{
		Listener: ln,
		slots:    make(chan struct{}, max),
		done:     make(chan struct{}),
		conns:    make(map[*limitedConn]struct{}, min(max, 1024)),
	}
}

// Open returns the number of connections open now.
func (l *LimitListener) Open() int { return len(l.slots) }

// Accept accepts the next connection and returns it once it has a slot.
func (l *LimitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.slots <- struct{}{}:
	default:
		if !l.makeRoom() {
			c.Close()
			return nil, net.ErrClosed
		}
	}
	lc := &limitedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[lc] = struct{}{}
	l.mu.Unlock()
	return lc, nil
}

// makeRoom closes an idle connection, or asks the next one to go idle to close, and
// waits for a slot. It returns false if the listener is closed meanwhile.
func (l *LimitListener) makeRoom() bool {
	l.waiting.Store(true)
	defer l.waiting.Store(false)
	var idle *limitedConn
	l.mu.Lock()
	for c := range l.conns {
		if c.idle.Load() {
			idle = c
			break
		}
	}
	l.mu.Unlock()
	if idle != nil && l.waiting.CompareAndSwap(true, false) {
		idle.Close()
	}
	select {
	case l.slots <- struct{}{}:
		return true
	case <-l.done:
		return false
	}
}

// ConnState is the http.Server hook that tells the listener which connections are idle.
// It costs one atomic store per request.
func (l *LimitListener) ConnState(c net.Conn, s http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	switch s {
	case http.StateIdle:
		lc.idle.Store(true)
		// One connection closes per waiting Accept, whichever gets here first.
		if l.waiting.Load() && l.waiting.CompareAndSwap(true, false) {
			lc.Close()
		}
	case http.StateActive:
		lc.idle.Store(false)
	}
}

// Close closes the listener and wakes an Accept that waits for a slot.
func (l *LimitListener) Close() error {
	err := l.Listener.Close()
	l.stop.Do(func() { close(l.done) })
	return err
}

// limitedConn gives its slot back when it is closed, once, whoever closes it.
type limitedConn struct {
	net.Conn
	l    *LimitListener
	idle atomic.Bool
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		<-c.l.slots
	})
	return err
}
