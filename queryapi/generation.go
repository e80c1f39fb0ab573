package main

import (
	"errors"
	"sync/atomic"

	"github.com/clickstream/pipeline/events"
)

// generations remembers which generation the pointer named at the last read. Every read
// of aggregates also reads the pointer, in the same MULTI/EXEC as the data, and is done
// again if the pointer had moved: so an answer always comes whole from the generation
// that was current at the moment it was read, never from one a rebuild is still
// building or one it has replaced.
type generations struct {
	keys events.Keys
	cur  atomic.Pointer[events.GenKeys]
}

func newGenerations(keys events.Keys) *generations {
	g := &generations{keys: keys}
	first := keys.Gen(1)
	g.cur.Store(&first)
	return g
}

// load returns the generation last seen current.
func (g *generations) load() events.GenKeys { return *g.cur.Load() }

// maxRedo bounds how often one read is done again because the pointer moved; it moves
// once per rebuild, so a second redo means something is wrong.
const maxRedo = 3

var errPointerMoving = errors.New("the generation pointer keeps moving")

// check compares the pointer value read with the data (ptr; "" when unset) with the
// generation the data was read from. If they differ it remembers the pointer's
// generation and returns it with moved set: the data must be read again.
func (g *generations) check(used events.GenKeys, ptr string) (events.GenKeys, bool, error) {
	n, err := events.ParseGeneration(ptr)
	if err != nil {
		return used, false, err
	}
	if n == used.Number {
		return used, false, nil
	}
	next := g.keys.Gen(n)
	g.cur.Store(&next)
	return next, true, nil
}
