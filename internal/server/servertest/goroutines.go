package servertest

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Goroutines is the set of goroutines that ran when it was taken, so that a test can
// tell which goroutines a service it then started and stopped left behind (what
// go.uber.org/goleak does, by hand: goroutine ids are never reused).
type Goroutines map[int]bool

// goroutine is one goroutine of a runtime.Stack dump.
type goroutine struct {
	id    int
	stack string
}

// TakeGoroutines records the goroutines running now.
func TakeGoroutines() Goroutines {
	g := Goroutines{}
	for _, r := range dump() {
		g[r.id] = true
	}
	return g
}

// CheckReturned fails t if a goroutine started since g runs code of the service (any
// file of this module but tests and test helpers): the service's run has returned, and
// it must have stopped and waited for every goroutine it started. A goroutine waited
// for with sync.WaitGroup.Go is past the service's code once Wait returns; one waited
// for with a Done deferred inside the service's own function may not be, so run waits
// with WaitGroup.Go, and this check has no grace period.
//
// known names functions (as in a stack, "(*Writer).flusher") whose goroutines are known
// not to be waited for yet: each is a bug, to be fixed and removed from the test.
func (g Goroutines) CheckReturned(t testing.TB, known ...string) {
	t.Helper()
	for _, r := range g.since() {
		if inService(r.stack) && !containsAny(r.stack, known) {
			t.Errorf("a goroutine of the service is still there after its run returned:\n%s", r.stack)
		}
	}
}

// CheckSettled waits until every goroutine started since g has exited (those of
// go-redis's pool and of net/http's connections take a moment after a close), and fails
// t with the stacks of those that have not after a generous deadline. The test's own
// HTTP clients must have closed their idle connections.
func (g Goroutines) CheckSettled(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := g.since()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, r := range left {
				b.WriteString(r.stack)
				b.WriteString("\n\n")
			}
			t.Fatalf("%d goroutines left behind (runtime.NumGoroutine %d, %d when the test began):\n%s",
				len(left), runtime.NumGoroutine(), len(g), b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// since returns the goroutines not in g, but the caller's.
func (g Goroutines) since() []goroutine {
	var out []goroutine
	all := dump()
	for i, r := range all {
		if i > 0 && !g[r.id] { // the first is the caller's
			out = append(out, r)
		}
	}
	return out
}

// dump parses runtime.Stack of every goroutine; the caller's comes first.
func dump() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for _, block := range strings.Split(string(buf), "\n\n") {
		// goroutine 42 [select, 2 minutes]:
		head, _, _ := strings.Cut(block, "\n")
		rest, ok := strings.CutPrefix(head, "goroutine ")
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(rest, " ")
		id, err := strconv.Atoi(idText)
		if err != nil {
			continue
		}
		out = append(out, goroutine{id: id, stack: block})
	}
	return out
}

// inService reports whether a stack runs code of the module outside tests and test
// helpers. It looks at the stack's frames, not at the line naming the goroutine's
// creator: a goroutine the service started and waited for may still be exiting in
// library code (sync.WaitGroup.Go's, after Done).
func inService(stack string) bool {
	var fn string
	for _, line := range strings.Split(stack, "\n")[1:] {
		file, ok := strings.CutPrefix(line, "\t")
		if !ok {
			fn = line
			continue
		}
		if strings.HasPrefix(fn, "created by ") {
			return false
		}
		if !strings.HasPrefix(fn, "main.") && !strings.HasPrefix(fn, module+"/") {
			continue
		}
		file, _, _ = strings.Cut(file, ":")
		dir := file[:max(strings.LastIndexByte(file, '/'), 0)]
		if !strings.HasSuffix(file, "_test.go") && !strings.Contains(dir[strings.LastIndexByte(dir, '/')+1:], "test") {
			return true
		}
	}
	return false
}

// module is this module's path, the prefix of its packages' function names.
const module = "github.com/clickstream/pipeline"

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
