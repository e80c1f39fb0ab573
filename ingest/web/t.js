// t.js: the clickstream pipeline's tracker, served by ingest at /t.js. README: "Collect
// from the browser". Include it with
//   <script defer src="https://ingest.example.com/t.js" data-key="WRITE_KEY" data-product="sku-1"></script>
// It sends, to POST /v1/collect on the host it came from:
// - a page_view on load, for the product of data-product, else <meta name="product-id">
//   (a page without a product sends no page view and no dwell: the contract needs one);
// - a click for a click on any element with data-product-id (or inside one);
// - a dwell: the time the page was visible, when it is hidden or left, once per
//   visible period (a background tab does not count);
// - on history.pushState and popstate, the dwell of the page left and a page view.
// Every event has a random event_id, so a beacon the browser sends twice counts once.
// The user is data-user-id or window.csUserId when the site knows them, else an
// anonymous id kept in localStorage (cs_anon; no cookie). data-anonymous="false" sends
// nothing for unknown users; with data-respect-dnt, Do Not Track and Global Privacy
// Control turn it off.
//
// Beacons (navigator.sendBeacon) are delivered even as the page unloads, and a
// text/plain one needs no CORS preflight; a beacon cannot set headers, so the write key
// goes in the body. Comment lines and indentation are stripped when ingest serves this.
(function () {
  'use strict';
  var tag = document.currentScript, w = window, doc = document, nav = navigator;
  // Loaded twice (or not as a script tag): the first one tracks.
  if (!tag || w.csTracker) return;
  w.csTracker = 1;
  var data = tag.dataset;
  if (data.respectDnt != null && (nav.doNotTrack == '1' || w.doNotTrack == '1' || nav.globalPrivacyControl)) return;
  var url = new URL('/v1/collect', tag.src).href;
  // The contract's ids and largest duration: an event ingest would refuse is not sent,
  // because a refused beacon would take the others of its body with it.
  var ID = /^(?!\.\.?$)[\w.:@-]{1,128}$/, MAX = 864e5;
  var anon, page = '', shown = null, path = location.pathname + location.search;

  function rnd() {
    var b = crypto.getRandomValues(new Uint8Array(16)), s = '';
    for (var i = 0; i < 16; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }

  // Read at every event: a site may set window.csUserId once the user signs in.
  function user() {
    var id = data.userId || w.csUserId;
    if (id) return '' + id;
    if (data.anonymous == 'false') return '';
    if (!anon) {
      try {
        anon = localStorage.getItem('cs_anon');
        if (!anon) localStorage.setItem('cs_anon', anon = 'anon:' + rnd());
      } catch (e) {
        // Storage is off: an id for this page's life only.
        anon = anon || 'anon:' + rnd();
      }
    }
    return anon;
  }

  function send(evs) {
    var u = user(), out = [];
    evs.forEach(function (e) {
      if (ID.test(u) && ID.test(e.product_id)) {
        e.user_id = u;
        e.event_id = rnd();
        out.push(e);
      }
    });
    if (!out.length) return;
    var body = JSON.stringify(data.key ? { writeKey: data.key, events: out } : { events: out });
    // sendBeacon refuses when its queue is full: fetch with keepalive also outlives the page.
    if (!(nav.sendBeacon && nav.sendBeacon(url, body))) {
      fetch(url, { method: 'POST', body: body, keepalive: true, mode: 'no-cors', credentials: 'omit' }).catch(function () {});
    }
  }

  function product() {
    var m = doc.querySelector('meta[name="product-id"]');
    return data.product || (m && m.content) || '';
  }

  // A visible period starts when the page is visible and none is open.
  function start() {
    if (shown == null && doc.visibilityState == 'visible') shown = performance.now();
  }

  // stop ends the visible period, adding its dwell to evs.
  function stop(evs) {
    if (shown != null) {
      var ms = Math.min(Math.round(performance.now() - shown), MAX);
      shown = null;
      if (page && ms > 0) evs.push({ type: 'dwell', product_id: page, duration_ms: ms });
    }
    return evs;
  }

  function view(evs) {
    page = product();
    if (page) evs.push({ type: 'page_view', product_id: page });
    send(evs);
    start();
  }

  // A single-page app's navigation. The new page's product is read once the app's own
  // handlers of this task have run (it may set the meta right after pushState).
  function moved() {
    var p = location.pathname + location.search;
    if (p == path) return;
    path = p;
    var evs = stop([]);
    setTimeout(function () { view(evs); });
  }

  doc.addEventListener('visibilitychange', function () {
    if (doc.visibilityState == 'hidden') send(stop([]));
    else start();
  });
  w.addEventListener('pagehide', function () { send(stop([])); });
  // Back to a page kept in the browser's back/forward cache: a new view.
  w.addEventListener('pageshow', function (e) { if (e.persisted) view([]); });
  // Capture: a click the page stops from bubbling still counts.
  doc.addEventListener('click', function (e) {
    var el = e.target.closest && e.target.closest('[data-product-id]');
    if (el) send([{ type: 'click', product_id: el.getAttribute('data-product-id') }]);
  }, true);
  var push = history.pushState;
  history.pushState = function () {
    var r = push.apply(this, arguments);
    moved();
    return r;
  };
  w.addEventListener('popstate', moved);

  // A page the browser prerenders is viewed only once it is shown.
  if (doc.prerendering) doc.addEventListener('prerenderingchange', function () { view([]); }, { once: true });
  else view([]);
})();
