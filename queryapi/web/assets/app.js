// The dashboard: reads the JSON API for the chosen range and the /v1/live stream for
// everything that changes by the second. Plain JS, no build step; uPlot draws the chart.
// Every request is same-origin, so a browser that has the Basic-auth key cached (from its
// own prompt, QUERY_KEYS) sends it with each one, the EventSource included.
(function () {
  'use strict';

  const body = document.body;
  const view = body.dataset.view; // dashboard, product or user
  const id = body.dataset.id;
  const RANGES = {
    '1h': { interval: 'minute', product: 'hour' },
    '24h': { interval: 'hour', product: 'hour' },
    '7d': { interval: 'hour', product: 'hour' },
    '30d': { interval: 'day', product: 'day' },
  };
  const DEFAULT_RANGE = '24h';
  const SERIES = view === 'product'
    ? [{ metric: 'clicks', label: 'Clicks', color: '--clicks' }, { metric: 'page_views', label: 'Page views', color: '--views' }]
    : [{ metric: 'clicks', label: 'Clicks', color: '--clicks' }, { metric: 'page_views', label: 'Page views', color: '--views' },
       { metric: 'unique_users', label: 'Unique users', color: '--users' }];

  const nf = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const pf = new Intl.NumberFormat(undefined, { style: 'percent', minimumFractionDigits: 1, maximumFractionDigits: 1 });
  // A space that does not break keeps a number with its unit in a narrow tile.
  const NBSP = '\u00a0';
  const fmt = {
    int: (v) => (v == null ? '–' : nf.format(v)),
    pct: (v) => (v == null ? '–' : pf.format(v)),
    rate: (v) => (v == null ? '–' : (v < 10 ? nf1.format(v) : nf.format(Math.round(v)))),
    // A time in ms: whole ms below a second, else seconds, minutes or hours, one decimal.
    dwell: (ms) => {
      if (ms == null) return '–';
      if (ms < 1000) return nf.format(Math.round(ms)) + NBSP + 'ms';
      if (ms < 60000) return nf1.format(ms / 1000) + NBSP + 's';
      if (ms < 3600000) return nf1.format(ms / 60000) + NBSP + 'min';
      return nf1.format(ms / 3600000) + NBSP + 'h';
    },
  };

  const $ = (sel) => document.querySelector(sel);
  const enc = encodeURIComponent;

  let range = rangeFromURL();
  let chart = null;
  let chartData = null; // [xs, ...series]: uPlot's columns
  let chartInterval = null;
  let reloadTimer = 0;
  let lastSnapshot = null;
  let snapshotsSeen = 0; // bumped by every snapshot, so that an older fetch never overwrites one

  function rangeFromURL() {
    const r = new URLSearchParams(location.search).get('range');
    return RANGES[r] ? r : DEFAULT_RANGE;
  }

  function interval() {
    return view === 'product' ? RANGES[range].product : RANGES[range].interval;
  }

  async function api(path) {
    // From the origin, never relative to the page's URL: a page opened with the key
    // in its address (user@host) would resolve to a URL with credentials, which fetch
    // refuses. The browser adds the credentials it has for the origin by itself.
    const resp = await fetch(location.origin + path, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    if (!resp.ok) {
      let msg = resp.status + ' ' + resp.statusText;
      try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(path + ': ' + msg);
    }
    return resp.json();
  }

  function showError(err) {
    const el = $('#error');
    if (!err) { el.hidden = true; el.textContent = ''; return; }
    el.hidden = false;
    el.textContent = String(err.message || err);
  }

  function setText(sel, text, raw) {
    const el = $(sel);
    if (!el) return;
    el.textContent = text;
    if (raw !== undefined) el.dataset.value = raw == null ? '' : String(raw);
  }

  // ---- range selection: kept in the URL so that a view can be shared -----------------

  function markRange() {
    document.querySelectorAll('.ranges a').forEach((a) => {
      const on = a.dataset.range === range;
      a.setAttribute('aria-current', on ? 'true' : 'false');
      const u = new URL(location.href);
      u.searchParams.set('range', a.dataset.range);
      a.href = u.pathname + u.search;
    });
    document.querySelectorAll('.interval').forEach((el) => { el.textContent = interval(); });
  }

  document.querySelectorAll('.ranges a').forEach((a) => {
    a.addEventListener('click', (ev) => {
      if (ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      range = a.dataset.range;
      history.pushState(null, '', a.href);
      load();
    });
  });
  window.addEventListener('popstate', () => { range = rangeFromURL(); load(); });

  // ---- tiles ---------------------------------------------------------------------------

  function showSummary(s) {
    setText('#tile-events', fmt.int(s.events), s.events);
    setText('#tile-clicks', fmt.int(s.clicks), s.clicks);
    setText('#tile-page_views', fmt.int(s.page_views), s.page_views);
    setText('#tile-unique_users', fmt.int(s.unique_users), s.unique_users);
    setText('#tile-avg_dwell', fmt.dwell(s.avg_dwell_ms), s.avg_dwell_ms);
    setText('#tile-ctr', fmt.pct(s.click_through_rate), s.click_through_rate);
  }

  function showTotals(t) {
    setText('#tile-clicks', fmt.int(t.clicks), t.clicks);
    setText('#tile-page_views', fmt.int(t.page_views), t.page_views);
    setText('#tile-dwell_ms', fmt.dwell(t.dwell_ms), t.dwell_ms);
    setText('#tile-dwell_count', fmt.int(t.dwell_count), t.dwell_count);
    const avg = t.dwell_count > 0 ? t.dwell_ms / t.dwell_count : null;
    setText('#tile-avg_dwell', fmt.dwell(avg), avg);
  }

  // ---- the chart and its table -----------------------------------------------------------

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartSize() {
    const el = $('#chart');
    const w = Math.max(el.clientWidth, 200);
    return { width: w, height: w < 500 ? 220 : 280 };
  }

  function makeChart() {
    const el = $('#chart');
    if (chart) { chart.destroy(); chart = null; }
    el.textContent = '';
    if (typeof uPlot === 'undefined') { el.textContent = 'chart library not loaded'; return; }
    const axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid'), width: 1 }, ticks: { stroke: cssVar('--grid'), width: 1 } };
    const size = chartSize();
    // A product's series has few buckets (2 hours for the last hour): bars, side by
    // side, say "this many in this bucket" where a line between two points would not.
    const xs = chartData[0];
    const bars = view === 'product' && xs.length <= 60 && uPlot.paths && uPlot.paths.bars;
    const step = xs.length > 1 ? xs[1] - xs[0] : 3600;
    const x = { time: true };
    if (bars) x.range = (u, lo, hi) => [lo - step / 2, hi + step / 2];
    const opts = {
      width: size.width,
      height: size.height,
      scales: { x: x, y: { range: (u, lo, hi) => [0, Math.max(hi * 1.1, 1)] } },
      axes: [
        // Bars get one tick per bucket, at its start; a line, uPlot's own time ticks.
        Object.assign({ space: 70 }, axis, bars ? {
          // Every k-th bucket, so that labels keep 90 px apart.
          splits: (u) => { const k = Math.ceil(xs.length * 90 / u.width); return xs.filter((v, i) => i % k === 0); },
          values: (u, vals) => vals.map((v) => new Date(v * 1000).toLocaleString(undefined,
            interval() === 'day' ? { month: 'short', day: 'numeric' } : { hour: 'numeric', minute: '2-digit' })),
        } : {}),
        Object.assign({}, axis, { size: 60, values: (u, vals) => vals.map((v) => nf.format(v)) }),
      ],
      series: [{ label: 'Time' }].concat(SERIES.map((s, i) => ({
        label: s.label,
        stroke: cssVar(s.color),
        fill: bars ? cssVar(s.color) : undefined,
        width: bars ? 0 : 2,
        paths: bars ? uPlot.paths.bars({ size: [0.35, 60], align: i === 0 ? -1 : 1 }) : undefined,
        points: { show: !bars && xs.length <= 60 },
        value: (u, v) => fmt.int(v),
      }))),
      cursor: { drag: { x: false, y: false } },
      // The legend names the series; the numbers are in the table under the chart.
      legend: { live: false },
    };
    chart = new uPlot(opts, chartData, el);
    el.dataset.state = 'ready';
    el.dataset.points = String(chartData[0].length);
  }

  function redrawChart() {
    if (!chartData) return;
    if (!chart) { makeChart(); return; }
    chart.setData(chartData);
    $('#chart').dataset.points = String(chartData[0].length);
  }

  function fillSeriesTable() {
    const table = $('#series-table');
    const head = document.createElement('tr');
    ['Start'].concat(SERIES.map((s) => s.label)).forEach((label, i) => {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = label;
      if (i === 0) th.className = 'id';
      head.appendChild(th);
    });
    table.tHead.replaceChildren(head);
    const rows = [];
    const dtf = new Intl.DateTimeFormat(undefined, interval() === 'day'
      ? { dateStyle: 'medium' } : { dateStyle: 'short', timeStyle: 'short' });
    for (let i = chartData[0].length - 1; i >= 0; i--) { // newest first
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.scope = 'row';
      th.className = 'id';
      th.textContent = dtf.format(new Date(chartData[0][i] * 1000));
      tr.appendChild(th);
      for (let s = 1; s < chartData.length; s++) {
        const td = document.createElement('td');
        td.textContent = chartData[s][i] == null ? 'expired' : fmt.int(chartData[s][i]);
        tr.appendChild(td);
      }
      rows.push(tr);
    }
    table.tBodies[0].replaceChildren(...rows);
  }

  async function loadSeries() {
    const iv = interval();
    const base = '/v1/stats/timeseries?range=' + range + '&interval=' + iv + (view === 'product' ? '&product=' + enc(id) : '');
    $('#csv-series').href = base + '&format=csv&metric=' + SERIES.map((s) => s.metric).join(',');
    const answers = await Promise.all(SERIES.map((s) => api(base + '&metric=' + s.metric)));
    const xs = answers[0].points.map((p) => p[0] / 1000);
    chartData = [xs].concat(answers.map((a) => a.points.map((p) => p[1])));
    // A new range is a new chart: its scales, ticks and kind (line or bars) follow the
    // data. The live updates in between only change values (redrawChart).
    chartInterval = iv;
    makeChart();
    fillSeriesTable();
    if (view === 'product') {
      const sum = (col) => col.reduce((a, v) => a + (v || 0), 0);
      setText('#tile-range_clicks', fmt.int(sum(chartData[1])), sum(chartData[1]));
      setText('#tile-range_page_views', fmt.int(sum(chartData[2])), sum(chartData[2]));
      setText('#range-note', 'whole ' + iv + 's');
    }
  }

  // updateChartLive puts the bucket in progress from a snapshot into the chart; a bucket
  // newer than the chart's last one means the range has moved on: the series is read
  // again (after a random delay, so that a thousand dashboards do not ask at once).
  function updateChartLive(snap) {
    if (!chartData || view !== 'dashboard') return;
    const cur = snap.current[chartInterval];
    if (!cur) return;
    const x = cur.from / 1000;
    const xs = chartData[0];
    const i = xs.lastIndexOf(x);
    if (i >= 0) {
      const vals = [cur.clicks, cur.page_views, cur.unique_users];
      let changed = false;
      for (let s = 0; s < SERIES.length; s++) {
        if (chartData[s + 1][i] !== vals[s]) { chartData[s + 1][i] = vals[s]; changed = true; }
      }
      if (changed) { redrawChart(); fillSeriesTable(); }
    } else if (xs.length && x > xs[xs.length - 1] && !reloadTimer) {
      reloadTimer = setTimeout(() => { reloadTimer = 0; loadRangeData().catch(showError); }, Math.random() * 5000);
    }
  }

  if (typeof ResizeObserver !== 'undefined' && $('#chart')) {
    let last = 0;
    new ResizeObserver(() => {
      if (!chart) return;
      const s = chartSize();
      if (s.width !== last) { last = s.width; chart.setSize(s); }
    }).observe($('#chart'));
  }
  if (window.matchMedia) {
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { if (chartData) makeChart(); });
  }

  // ---- top products and pipeline health ---------------------------------------------------

  async function loadTop() {
    const path = '/v1/stats/top-products?range=' + range + '&limit=10';
    $('#csv-top').href = path + '&format=csv';
    const top = await api(path);
    const rows = top.products.map((p, i) => {
      const tr = document.createElement('tr');
      const a = document.createElement('a');
      a.href = '/products/' + enc(p.product_id) + '?range=' + range;
      a.textContent = p.product_id;
      const cells = [String(i + 1), a, fmt.int(p.clicks), fmt.int(p.page_views)];
      cells.forEach((c, j) => {
        const td = document.createElement('td');
        if (j === 1) td.className = 'id';
        if (typeof c === 'string') td.textContent = c; else td.appendChild(c);
        tr.appendChild(td);
      });
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 4;
      td.className = 'empty';
      td.textContent = 'no products in this range';
      tr.appendChild(td);
      rows.push(tr);
    }
    $('#top').tBodies[0].replaceChildren(...rows);
  }

  function showHealth(p, rebuild) {
    setText('#h-length', fmt.int(p.length), p.length);
    setText('#h-dead', fmt.int(p.dead_letter.length), p.dead_letter.length);
    $('#h-dead').classList.toggle('warn', p.dead_letter.length > 0);
    const current = p.groups.find((g) => g.name.endsWith('-g' + p.generation));
    setText('#h-processors', current ? fmt.int(current.consumers) : '0', current ? current.consumers : 0);
    setText('#h-generation', String(p.generation), p.generation);
    let rb = 'none running';
    if (rebuild.in_progress) rb = rebuild.state + ' generation ' + rebuild.generation + ', ' + fmt.int(rebuild.applied) + ' entries replayed';
    else if (rebuild.state !== 'idle') rb = 'last: ' + rebuild.state;
    setText('#h-rebuild', rb);
    $('#h-rebuild').classList.toggle('warn', rebuild.in_progress || rebuild.state === 'failed');
    const rows = p.groups.map((g) => {
      const tr = document.createElement('tr');
      [g.name, g.lag < 0 ? 'unknown' : fmt.int(g.lag), fmt.int(g.pending), fmt.int(g.consumers)].forEach((v, j) => {
        const td = document.createElement('td');
        if (j === 0) td.className = 'id';
        td.textContent = v;
        tr.appendChild(td);
      });
      return tr;
    });
    $('#groups').tBodies[0].replaceChildren(...rows);
  }

  // ---- the live stream ----------------------------------------------------------------------

  function setLive(text, cls) {
    const el = $('#live');
    el.textContent = text;
    el.className = 'live ' + (cls || '');
  }

  function applySnapshot(snap) {
    lastSnapshot = snap;
    snapshotsSeen++;
    const s = snap.ranges[range];
    if (s) showSummary(s);
    setText('#tile-active', fmt.int(snap.active_users), snap.active_users);
    setText('#tile-rate', fmt.rate(snap.events_per_second), snap.events_per_second);
    showHealth(snap.pipeline, snap.rebuild);
    updateChartLive(snap);
    const t = new Date(snap.time);
    setLive('live · ' + t.toLocaleTimeString(), 'on');
    $('#live').dataset.time = String(snap.time);
  }

  function connectLive() {
    const es = new EventSource('/v1/live');
    es.onmessage = (ev) => {
      try { applySnapshot(JSON.parse(ev.data)); } catch (e) { showError(e); }
    };
    es.addEventListener('unavailable', () => setLive('storage unavailable; retrying', 'warn'));
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // A refusal (503: too many streams, or shutting down) closes an EventSource
        // for good: try again later ourselves.
        setLive('disconnected; retrying', 'warn');
        setTimeout(connectLive, 5000 + Math.random() * 10000);
      } else {
        setLive('reconnecting…', 'warn');
      }
    };
  }

  // ---- loading a view -----------------------------------------------------------------------

  async function loadRangeData() {
    const jobs = [loadSeries()];
    if (view === 'dashboard') jobs.push(loadTop());
    await Promise.all(jobs);
  }

  async function load() {
    markRange();
    showError(null);
    try {
      if (view === 'dashboard') {
        $('#csv-summary').href = '/v1/stats/summary?range=' + range + '&format=csv';
        if (lastSnapshot && lastSnapshot.ranges[range]) showSummary(lastSnapshot.ranges[range]);
        const seen = snapshotsSeen;
        const summary = api('/v1/stats/summary?range=' + range).then((s) => { if (snapshotsSeen === seen) showSummary(s); });
        await Promise.all([summary, loadRangeData()]);
      } else if (view === 'product') {
        const [t] = await Promise.all([api('/v1/products/' + enc(id)), loadSeries()]);
        showTotals(t);
      } else {
        showTotals(await api('/v1/users/' + enc(id)));
      }
      body.dataset.loaded = range;
    } catch (e) {
      showError(e);
    }
  }

  const form = $('#lookup');
  if (form) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('#lookup-id').value.trim();
      if (v) location.href = '/users/' + enc(v) + '?range=' + range;
    });
  }

  load();
  if (view === 'dashboard') connectLive();
  else $('#live').hidden = true; // only the dashboard's own numbers are live
})();
