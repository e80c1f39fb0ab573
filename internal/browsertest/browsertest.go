// Package browsertest drives a real headless Chromium from tests, with chromedp: it
// finds the browser (and fails with the command that installs it when there is none),
// starts it with a clean profile for one test, answers the browser's HTTP
// authentication prompt as a person would, collects what the pages log as errors, waits
// for conditions in the page, hides and shows the page (its window minimized and
// restored), and takes screenshots at a given window size.
//
// Tests that use it are browser tests of the pipeline's own pages, and of test pages
// that use them, served from loopback: the browser loads nothing else.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"
)

// InstallHint says how to install Chromium, for the failure of a machine without it.
const InstallHint = "install it with scripts/deps.sh chromium (as root: it runs apt-get install -y chromium), " +
	"or set CHROMIUM to a Chromium or Chrome binary"

// candidates are the names Chromium goes by on Debian, Ubuntu and elsewhere.
var candidates = []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome", "chrome"}

// Path returns the browser to run: $CHROMIUM when it is set, else the first of
// candidates on PATH.
func Path() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium on PATH (looked for %s)", strings.Join(candidates, ", "))
}

// Browser is one headless Chromium with one tab, for one test.
type Browser struct {
	t   testing.TB
	ctx context.Context // the tab's chromedp context; cancelled when the test ends

	mu       sync.Mutex
	problems []string // uncaught exceptions and console errors, in order
}

// Start runs a headless Chromium for t, with its own profile, and stops it when the
// test ends. On a machine without Chromium the test fails (it does not skip: a browser
// test that silently does not run proves nothing) with the command that installs it.
//
// Pages render with the en-US locale, so numbers are formatted the same way on every
// machine, and the tab's size is set by Screenshot (or SetSize), 1280×900 before that.
func Start(t testing.TB) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Fatalf("browser test: %v: %s", err, InstallHint)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", "en-US"),
		chromedp.Env("LANG=en_US.UTF-8", "TZ=UTC"),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to start as root with its sandbox on: the sandbox needs to
		// drop privileges, which root in a container often cannot do the way Chromium
		// wants. CI runs as root. The sandbox protects the machine from hostile pages;
		// this browser loads only the test's own pages from loopback.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &Browser{t: t, ctx: ctx}
	console := chromedp.Console(ctx) // starts the browser; subscribed before any page loads
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" ("+m.URL+")")
				b.mu.Unlock()
			}
		}
	}()
	start, cancelStart := context.WithTimeout(ctx, 60*time.Second)
	defer cancelStart()
	if _, err := chromedp.Call(start, emulation.SetLocaleOverride, emulation.SetLocaleOverrideParams{Locale: "en-US"}); err != nil {
		t.Fatalf("browser test: start %s: %v", path, err)
	}
	return b
}

// Context is the tab's chromedp context, for actions this package does not wrap.
func (b *Browser) Context() context.Context { return b.ctx }

// Do runs steps in the tab, failing the test if they do not finish within timeout.
func (b *Browser) Do(timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v%s", err, b.problemsNote())
	}
}

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	b.Do(60*time.Second, chromedp.Navigate(url))
}

// Eval evaluates a JavaScript expression in the tab and decodes its value into T.
func Eval[T any](b *Browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v%s", expr, err, b.problemsNote())
	}
	return v
}

// WaitFor evaluates the JavaScript expression cond every 50 ms until it is true. When
// it is not true within timeout the test fails, with what and the value of the
// expression show (say, the text the page shows instead), so that a failure says what
// the page looked like. An evaluation that fails (the page is navigating) is tried
// again. The timeout is a deadline for a condition, never a measurement: give it room.
func (b *Browser) WaitFor(timeout time.Duration, what, cond, show string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	shown := "?"
	if show != "" {
		sctx, scancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer scancel()
		if v, serr := chromedp.Run(sctx, chromedp.Evaluate[any](show)); serr == nil {
			shown = fmt.Sprintf("%v", v)
		}
	}
	note := ""
	if last != nil {
		note = " (last evaluation: " + last.Error() + ")"
	}
	b.t.Fatalf("browser: %s: not within %v%s; the page shows %s%s", what, timeout, note, shown, b.problemsNote())
}

// Hide minimizes the tab's window, as a person does who switches to another
// application: the page becomes hidden (visibilitychange) and stays so until Show.
func (b *Browser) Hide() {
	b.t.Helper()
	b.setWindow(browser.WindowStateMinimized)
}

// Show restores the tab's window: the page becomes visible again.
func (b *Browser) Show() {
	b.t.Helper()
	b.setWindow(browser.WindowStateNormal)
}

func (b *Browser) setWindow(state browser.WindowState) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	w, err := chromedp.CallBrowser(ctx, browser.GetWindowForTarget,
		browser.GetWindowForTargetParams{TargetID: chromedp.FromContext(b.ctx).Target.TargetID})
	if err == nil {
		_, err = chromedp.CallBrowser(ctx, browser.SetWindowBounds,
			browser.SetWindowBoundsParams{WindowID: w.WindowID, Bounds: &browser.Bounds{WindowState: state}})
	}
	if err != nil {
		b.t.Fatalf("browser: set the window %s: %v", state, err)
	}
}

// SetSize sets the tab's viewport to width×height CSS pixels at scale 1.
func (b *Browser) SetSize(width, height int64) {
	b.t.Helper()
	b.Do(30*time.Second, chromedp.EmulateViewport(width, height))
}

// Screenshot sets the viewport to width×height, waits until ready (a JavaScript
// expression; "" for none) holds at that size, and writes a PNG of the whole page to
// path.
func (b *Browser) Screenshot(path string, width, height int64, ready string) {
	b.t.Helper()
	b.SetSize(width, height)
	if ready != "" {
		b.WaitFor(30*time.Second, fmt.Sprintf("the page ready at %dx%d", width, height), ready, "")
	}
	// Two animation frames: the layout and the chart's redraw at the new size are
	// painted before the capture.
	b.Do(30*time.Second, chromedp.Evaluate[chromedp.Void](
		`new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r())))`, chromedp.EvalAwaitPromise))
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// BasicAuth makes the browser answer every HTTP authentication challenge with user and
// password, as a person typing them into the browser's own prompt would, and returns
// the number of challenges answered so far (read it with Load). The browser then
// caches the credentials as after a prompt, and sends them with later requests to the
// same origin itself; a count that stays at 1 shows that it does.
//
// Call it before the first navigation. Every request of the tab passes through the
// DevTools Fetch domain from then on, which continues it unchanged.
func (b *Browser) BasicAuth(user, password string) *atomic.Int64 {
	b.t.Helper()
	var n atomic.Int64
	paused := chromedp.Events(b.ctx, fetch.RequestPaused)
	challenged := chromedp.Events(b.ctx, fetch.AuthRequired)
	go func() {
		for ev, err := range paused {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(b.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID}); err != nil && !errors.Is(err, context.Canceled) {
				b.problem("continue request " + ev.Request.URL + ": " + err.Error())
			}
		}
	}()
	go func() {
		for ev, err := range challenged {
			if err != nil {
				return
			}
			n.Add(1)
			resp := &fetch.AuthChallengeResponse{Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: user, Password: password}
			if _, err := chromedp.Call(b.ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: ev.RequestID, AuthChallengeResponse: resp}); err != nil && !errors.Is(err, context.Canceled) {
				b.problem("answer auth challenge of " + ev.Request.URL + ": " + err.Error())
			}
		}
	}()
	handle := true
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &handle}); err != nil {
		b.t.Fatalf("browser: enable auth handling: %v", err)
	}
	return &n
}

func (b *Browser) problem(p string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, p)
}

// Problems returns the uncaught exceptions and console errors of the pages so far
// (a failed request, a blocked script, a broken Content-Security-Policy), in order.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

func (b *Browser) problemsNote() string {
	p := b.Problems()
	if len(p) == 0 {
		return ""
	}
	return "\nthe pages logged:\n  " + strings.Join(p, "\n  ")
}
