/* Pulseboard wall page: live tiles of one dashboard over WebSocket.
 *
 * URL: /wall/{slug}[?stale_after_s=15]
 *
 * - Tile order and a first render come from GET /api/v1/dashboards/{slug};
 *   live values from /ws/dashboards/{slug} (CONTRACT §4): a snapshot, then
 *   updates with only the changed tiles, heartbeats while idle.
 * - Trends: the snapshot carries up to 60 points per tile (one per minute of
 *   the server's view clock, the last one still moving); updates extend them
 *   the same way (a new point when the minute of `as_of` moves, else the last
 *   point is replaced).
 * - STALE: no snapshot/update/heartbeat for `stale_after_s` seconds, or the
 *   socket is down.  Then the whole screen says so; tiles keep their last
 *   values, dimmed and hatched.
 * - Reconnect: exponential backoff with jitter (1 s doubling, capped at 30 s),
 *   resuming with ?epoch=E&since=N so the server sends only what was missed.
 *
 * A native ES module: numbers, targets, status words and times are formatted by
 * ../common/common.js, the same rules as the end-of-day and scorecard pages.
 * No inline script, no third-party code; everything is drawn here.
 */
import {
  $, formatValue, hhmmText, isNum, onReady, severityOf, shortDateText, STATUS, statusKey, targetText, timeText,
  valueText, zoneCity
} from '../common/common.js';

// ---------------------------------------------------------------- settings
var params = new URLSearchParams(window.location.search);
var PATH = window.location.pathname.replace(/\/+$/, '').split('/');
// /wall/playlist/{name}: a rotation over one multiplexed socket (/ws/screens); else one dashboard.
var PLAYLIST = PATH.length >= 4 && PATH[PATH.length - 2] === 'playlist' ? decodeURIComponent(PATH[PATH.length - 1]) : null;
var SLUG = PLAYLIST ? '' : decodeURIComponent(PATH[PATH.length - 1] || '');
var PAGE_PARAMS = ['stale_after_s', 'kiosk', 'interval_s'];   // the page's own; every other one narrows the dashboard
var VIEW_PARAMS = {};     // dimension -> value: /wall/noc?site=X narrows every tile to site X
params.forEach(function (v, k) { if (PAGE_PARAMS.indexOf(k) < 0) VIEW_PARAMS[k] = v; });

/** The view key the server uses (CONTRACT §4): slug, then ?KEY=VALUE&... sorted, not URL-encoded. */
function viewKey(slug, p) {
  var keys = Object.keys(p || {}).sort();
  return keys.length ? slug + '?' + keys.map(function (k) { return k + '=' + p[k]; }).join('&') : slug;
}

function viewQuery(p) {
  var q = new URLSearchParams();
  Object.keys(p || {}).sort().forEach(function (k) { q.set(k, p[k]); });
  var text = q.toString();
  return text ? '?' + text : '';
}
// ?stale_after_s= wins; else the server's setting if it sends one (snapshot or dashboard JSON); else 15 s.
var MAX_PARAM_S = 86400;  // the longest ?stale_after_s= taken (as PULSEBOARD_STALE_AFTER_S)
var STALE_FROM_QUERY = positiveParam('stale_after_s', 0) > 0;
var STALE_AFTER_MS = positiveParam('stale_after_s', 15) * 1000;
var BACKOFF_BASE_MS = 1000;
var BACKOFF_CAP_MS = 30000;
var PING_EVERY_MS = 20000;
// An open socket that stays silent this long is presumed dead (half-open TCP): close and reconnect.
var SILENT_RECONNECT_MS = Math.max(2 * STALE_AFTER_MS + 5000, 20000);

function serverStaleAfter(obj) {
  var v = obj && obj.stale_after_s;
  if (STALE_FROM_QUERY || typeof v !== 'number' || !(v > 0 && v <= MAX_PARAM_S)) return;
  STALE_AFTER_MS = v * 1000;
  SILENT_RECONNECT_MS = Math.max(2 * STALE_AFTER_MS + 5000, 20000);
}
var TREND_POINTS = 60;

// A page parameter that is a number in (0, MAX_PARAM_S]; anything else (1e308 would disable STALE) is ignored.
function positiveParam(name, fallback) {
  var v = parseFloat(params.get(name));
  return isFinite(v) && v > 0 && v <= MAX_PARAM_S ? v : fallback;
}

// ------------------------------------------------------------------- state
var state = {
  title: null,
  tz: null,
  order: [],          // tile ids in display order
  tiles: {},          // id -> latest tile JSON
  trends: {},         // id -> [number|null], oldest first
  epoch: null,
  seq: null,
  asOf: null,         // ISO of the newest data
  clock: null,        // the server's clock ('wall' or 'event'), from the snapshot
  trendMinute: null,  // minute (epoch ms / 60000) of the last trend point
  ws: null,
  open: false,
  lastFrameAt: null,  // performance.now() of the last data frame
  loadedAt: performance.now(),
  attempt: 0,
  reconnectTimer: null,
  reconnectAt: null,
  lastClose: null,
  stale: false,
  layoutKey: null,
  shown: [],          // playlist: the views shown, in order
  snapshots: []       // playlist: the views whose snapshot arrived, in order
};

var els = {};          // tile id -> {root, value, num, unit, badge, shape, word, target, spark}
var playlist = null;   // {name, title, interval_s, dashboards: [{dashboard, params, view}], index, rotations}

// -------------------------------------------------------------- formatting
// Values, targets and status words come from common.js: the same text as the day page and scorecard.
var NO_BADGE = { shape: '', word: '' };

function tileStatus(tile) { return statusKey(tile && tile.status, !!tile && isNum(tile.target)); }

function badgeOf(key) { return STATUS[key] || NO_BADGE; }

/** "target ≤ 3.0 d" / "target ≥ 80.0 %"; "" without a target. */
function formatTarget(tile) {
  var text = targetText(tile.target, tile.unit, tile.direction);
  return text ? 'target ' + text : '';
}

/** "queue PS" for a filtered tile, unless its title already names the filter values. */
function dimsText(dims, title) {
  var keys = dims ? Object.keys(dims) : [];
  var named = keys.every(function (k) { return (title || '').indexOf(String(dims[k])) >= 0; });
  if (!keys.length || named) return '';
  return keys.map(function (k) { return k + ' ' + dims[k]; }).join(' · ');
}

// ----------------------------------------------------------------- layout
/** Split n tiles into rows of at most maxPerRow, as even as possible (longer rows first). */
function splitRows(n, maxPerRow) {
  if (n === 0) return [];
  var rows = Math.ceil(n / maxPerRow), base = Math.floor(n / rows), extra = n % rows, out = [];
  for (var i = 0; i < rows; i++) out.push(base + (i < extra ? 1 : 0));
  return out;
}

/** Hero row(s) of large tiles on top, then rows of normal tiles that fill the width. */
function layout(force) {
  var ids = state.order.filter(function (id) { return state.tiles[id]; });
  var large = ids.filter(function (id) { return state.tiles[id].size === 'large'; });
  var normal = ids.filter(function (id) { return state.tiles[id].size !== 'large'; });
  var aspect = window.innerWidth / Math.max(window.innerHeight, 1);
  var maxNormal = Math.max(2, Math.round(aspect * 3));    // 5 per row at 16:9
  var maxLarge = Math.max(1, Math.round(aspect * 1.8));   // 3 per row at 16:9 (an alarm list counts 2)
  var heroRows = splitRows(large.length, maxLarge);
  var normalRows = splitRows(normal.length, maxNormal);
  var key = ids.join(',') + '|' + heroRows.join('.') + '|' + normalRows.join('.');
  if (!force && key === state.layoutKey) return;
  state.layoutKey = key;

  var grid = $('grid');
  grid.style.setProperty('--normal-cols', String(Math.max.apply(null, normalRows.concat([1]))));
  grid.style.setProperty('--hero-cols', String(Math.max.apply(null, heroRows.concat([1]))));
  var rows = [];
  var take = function (list, counts, cls) {
    var at = 0;
    counts.forEach(function (count) {
      rows.push({ cls: cls, ids: list.slice(at, at + count) });
      at += count;
    });
  };
  take(large, heroRows, 'hero');
  take(normal, normalRows, 'normal');
  // Hero rows get more height than normal rows.
  // Hero rows get more height than normal rows; one holding an alarm list more still (its rows).
  grid.style.setProperty('grid-template-rows', rows.map(function (r) {
    var list = r.ids.some(function (id) { return isList(state.tiles[id]); });
    return r.cls === 'hero' ? (normalRows.length ? (list ? '2.3fr' : '1.62fr') : '1fr') : '1fr';
  }).join(' ') || '1fr');
  while (grid.firstChild) grid.removeChild(grid.firstChild);
  rows.forEach(function (r) {
    var row = document.createElement('div');
    row.className = 'row ' + r.cls;
    var cols = r.ids.reduce(function (n, id) { return n + (isList(state.tiles[id]) ? 2 : 1); }, 0);
    row.style.setProperty('grid-template-columns', 'repeat(' + cols + ', minmax(0, 1fr))');
    r.ids.forEach(function (id) {
      var root = tileEl(id).root;
      root.style.gridColumn = isList(state.tiles[id]) ? 'span 2' : '';
      row.appendChild(root);
    });
    grid.appendChild(row);
  });
  Object.keys(els).forEach(function (id) { els[id].fitted = null; });
}

// ------------------------------------------------------------------ tiles
var SVG_NS = 'http://www.w3.org/2000/svg';

function svg(name, attrs) {
  var el = document.createElementNS(SVG_NS, name);
  for (var k in attrs) el.setAttribute(k, attrs[k]);
  return el;
}

function div(cls, parent, tag) {
  var el = document.createElement(tag || 'div');
  el.className = cls;
  if (parent) parent.appendChild(el);
  return el;
}

function tileEl(id) {
  if (els[id]) return els[id];
  var root = div('tile');
  root.setAttribute('data-tile-id', id);
  var body = div('t-body', root);
  var title = div('t-title', body, 'h2');
  var main = div('t-main', body);
  var value = div('value', main);
  var num = div('num', value, 'span');
  var unit = div('unit', value, 'span');
  var badge = div('badge', main);
  var shape = div('shape', badge, 'span');
  shape.setAttribute('aria-hidden', 'true');
  var word = div('word', badge, 'span');
  var meta = div('t-meta', body);
  var target = div('target', meta, 'span');
  var dims = div('dims', meta, 'span');
  var age = div('age', meta, 'span');   // data age, shown once the tile's lag passes its threshold
  age.hidden = true;
  var why = div('why', meta, 'a');      // a red tile leads to its owner's explanation on the scorecard
  why.hidden = true;
  why.textContent = 'Why? →';
  var feed = div('feed', root);
  feed.setAttribute('role', 'alert');
  feed.hidden = true;
  var list = div('alarms', body);
  var sparkBox = div('spark', body);
  var spark = svg('svg', { viewBox: '0 0 100 40', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
  var area = svg('path', { class: 'area' });
  var tline = svg('line', { class: 'tline', x1: 0, x2: 100, 'vector-effect': 'non-scaling-stroke' });
  var line = svg('path', { class: 'line', 'vector-effect': 'non-scaling-stroke' });
  spark.appendChild(area);
  spark.appendChild(tline);
  spark.appendChild(line);
  sparkBox.appendChild(spark);
  els[id] = { root: root, title: title, badge: badge, shape: shape, word: word, value: value, num: num,
              unit: unit, target: target, dims: dims, age: age, why: why, area: area, tline: tline, line: line, rendered: null,
              feed: feed, list: list, sparkBox: sparkBox, rows: {} };
  return els[id];
}

function isList(tile) { return !!tile && tile.kind === 'alarm_list'; }

/** A tile filtered by one severity shows that severity's shape + word (X.733), not colour alone. */
function severityBadge(tile) {
  var sev = tile && tile.dims && tile.dims.severity;
  return sev ? severityOf(String(sev)) : null;
}

/** "STALE · no events from pcic2021 since 14:32" for a tile whose feed is silent (CONTRACT §4 `feed`). */
function feedText(feed) {
  var who = feed.source ? feed.source : 'any source';
  var since = feed.since ? hhmmText(feed.since, state.tz) : '—';
  return 'STALE · no events from ' + who + ' since ' + since + (feed.seen === false ? ' (server start)' : '');
}

function renderFeed(e, tile) {
  var feed = tile && tile.feed;
  e.root.setAttribute('data-feed', feed ? 'silent' : 'ok');
  e.root.classList.toggle('feed-silent', !!feed);
  e.feed.hidden = !feed;
  e.feed.textContent = feed ? feedText(feed) : '';
}

/** Rows of an alarm list: severity (shape + word), device or service, type, age (ticking), ack. */
function renderList(e, tile) {
  var rows = Array.isArray(tile.alarms) ? tile.alarms : [];
  var box = e.list, keep = {};
  rows.forEach(function (a, i) {
    var r = e.rows[a.alarm];
    if (!r) {
      r = { root: div('alarm') };
      r.root.setAttribute('data-alarm', a.alarm);
      r.sev = div('a-sev', r.root, 'span');
      r.shape = div('shape', r.sev, 'span');
      r.shape.setAttribute('aria-hidden', 'true');
      r.word = div('word', r.sev, 'span');
      r.what = div('a-what', r.root, 'span');
      r.type = div('a-type', r.root, 'span');
      r.age = div('a-age', r.root, 'span');
      r.ack = div('a-ack', r.root, 'span');
      e.rows[a.alarm] = r;
    }
    var sev = severityOf(a.severity);
    r.root.className = 'alarm sev-' + (severityOf(a.severity) !== severityOf(null) ? a.severity : 'none');
    r.shape.textContent = sev.shape;
    r.word.textContent = sev.word;
    r.what.textContent = a.device ? 'device ' + a.device : (a.service || a.alarm);
    r.type.textContent = a.type ? 'type ' + a.type : '';
    r.raisedMs = Date.parse(a.raised_at);
    r.ack.textContent = a.acknowledged ? '✔ ACK' : '✖ NOT ACK';
    r.ack.className = 'a-ack ' + (a.acknowledged ? 'acked' : 'unacked');
    r.root.setAttribute('data-acknowledged', a.acknowledged ? 'true' : 'false');
    keep[a.alarm] = true;
    if (box.children[i] !== r.root) box.insertBefore(r.root, box.children[i] || null);
  });
  Object.keys(e.rows).forEach(function (k) {
    if (!keep[k]) { if (e.rows[k].root.parentNode) box.removeChild(e.rows[k].root); delete e.rows[k]; }
  });
  e.listTotal = tile.value || 0;
  fitList(e);
  tickAges();
}

/** Show the rows that fit the tile at the wall's type size (readable across a room), hide the
 *  rest, and say how many are open and how many are not shown. */
function fitList(e) {
  var box = e.list, rows = Array.prototype.slice.call(box.children);
  // One layout pass: un-hide, read every row's bottom, then hide the ones past the tile's edge.
  rows.forEach(function (row) { row.hidden = false; });
  var limit = box.getBoundingClientRect().bottom;
  var bottoms = rows.map(function (row) { return row.getBoundingClientRect().bottom; });
  var shown = 0;
  rows.forEach(function (row, i) {
    row.hidden = bottoms[i] > limit + 1;
    if (!row.hidden) shown += 1;
  });
  var total = e.listTotal || 0, more = total - shown;
  e.target.textContent = total ? total + (total === 1 ? ' open alarm' : ' open alarms') : 'no open alarm';
  e.dims.textContent = more > 0 ? '+ ' + more + ' more not shown' : '';
}

/** Now as the wall shows it: the event clock in event-time mode (replays), else the browser's. */
function viewNowMs() {
  if (state.clock === 'event' && state.asOf) return Date.parse(state.asOf);
  return Date.now();
}

/** Every alarm row's age, by the common duration rule ("4:05 min"), from the view clock. */
function tickAges() {
  var now = viewNowMs();
  Object.keys(els).forEach(function (id) {
    var rows = els[id].rows;
    Object.keys(rows).forEach(function (k) {
      var r = rows[k];
      if (isNaN(r.raisedMs)) { r.age.textContent = '—'; return; }
      r.age.textContent = valueText(Math.max(0, Math.floor((now - r.raisedMs) / 1000)), 's');
    });
  });
}

function renderFeedBanner() {
  var silent = state.order.map(function (id) { return state.tiles[id] && state.tiles[id].feed; })
    .filter(function (f) { return !!f; });
  var box = $('feed-banner');
  if (!box) return;
  box.hidden = !silent.length;
  document.body.classList.toggle('feed-silent', silent.length > 0);
  if (silent.length) $('feed-text').textContent = feedText(silent[0]).replace(/^STALE · /, '');
}

function renderTile(id) {
  var tile = state.tiles[id];
  if (!tile) return;
  var e = tileEl(id);
  renderFeed(e, tile);
  var st = tileStatus(tile), badge = badgeOf(st);
  var sevBadge = severityBadge(tile);
  if (sevBadge && st === 'none') { badge = sevBadge; st = 'sev'; }
  var v = formatValue(tile.value, tile.unit);
  e.root.setAttribute('data-status', tile.status || 'none');
  e.root.setAttribute('data-size', tile.size === 'large' ? 'large' : 'normal');
  e.root.className = 'tile s-' + st + (tile.size === 'large' ? ' large' : '') + (isList(tile) ? ' list' : '') +
    (sevBadge ? ' sev-' + tile.dims.severity : '') + (tile.feed ? ' feed-silent' : '');
  e.title.textContent = tile.title || tile.kpi;
  e.shape.textContent = badge.shape;
  e.word.textContent = badge.word;
  e.badge.hidden = st === 'none';
  e.num.textContent = v.num;
  e.unit.textContent = v.unit;
  e.target.textContent = formatTarget(tile);
  e.dims.textContent = sevBadge ? '' : dimsText(tile.dims, tile.title);
  var age = dataAge(tile);
  e.age.hidden = age === null;
  e.age.textContent = age === null ? '' : 'data ' + ago(age * 1000) + ' old';
  e.root.toggleAttribute('data-old', age !== null);
  var explain = st === 'red' && tile.links && tile.links.scorecard;
  e.why.hidden = !explain;
  if (explain) e.why.setAttribute('href', tile.links.scorecard); else e.why.removeAttribute('href');
  e.root.setAttribute('aria-label', (tile.title || tile.kpi) + ': ' + v.num + ' ' + v.unit +
    (badge.word ? ', ' + badge.word : '') + (tile.feed ? ', ' + feedText(tile.feed) : ''));
  e.list.hidden = !isList(tile);
  e.sparkBox.hidden = isList(tile);
  if (isList(tile)) renderList(e, tile);
  else renderSpark(e, state.trends[id] || [], tile);
  fitValue(e, false);
}

/** Seconds since the tile's newest event (at the wall's as-of), or null while under its threshold. */
function dataAge(tile) {
  var f = tile.freshness;
  if (!f || !f.watermark || !isNum(f.stale_after_s)) return null;
  var now = Date.parse(state.asOf || tile.as_of || '');
  var age = (now - Date.parse(f.watermark)) / 1000;
  return isFinite(age) && age > f.stale_after_s ? age : null;
}

/** Shrink a value that would overflow its tile (long numbers, narrow tiles); CSS sizes the rest. */
function fitValue(e, force) {
  var text = e.value.textContent + '|' + e.badge.textContent + '|' + e.badge.hidden;
  if (!force && e.fitted === text) return;
  e.fitted = text;
  e.value.style.removeProperty('--fit');
  var avail = e.value.clientWidth, need = e.value.scrollWidth;
  if (avail > 0 && need > avail) e.value.style.setProperty('--fit', ((avail / need) * 0.97).toFixed(3));
}

/** Sparkline: one path per run of non-null points, an area under it, a dashed target line. */
function renderSpark(e, trend, tile) {
  var pts = trend.slice(-TREND_POINTS);
  var nums = pts.filter(function (x) { return typeof x === 'number' && isFinite(x); });
  var hasTarget = typeof tile.target === 'number' && isFinite(tile.target);
  if (nums.length === 0) {
    e.line.setAttribute('d', '');
    e.area.setAttribute('d', '');
    e.tline.setAttribute('visibility', 'hidden');
    return;
  }
  var lo = Math.min.apply(null, nums), hi = Math.max.apply(null, nums);
  if (hasTarget) { lo = Math.min(lo, tile.target); hi = Math.max(hi, tile.target); }
  if (tile.unit === 'calls' || tile.unit === 's') lo = Math.min(lo, 0);   // counts and durations: from zero
  var span = hi - lo;
  if (span <= 0) span = Math.abs(hi) || 1;
  lo -= span * 0.08; hi += span * 0.08; span = hi - lo;
  var n = pts.length;
  var x = function (i) { return n === 1 ? 100 : (i / (n - 1)) * 100; };
  var y = function (val) { return (38 - ((val - lo) / span) * 36).toFixed(2); };
  var line = '', area = '', run = [];
  var flush = function () {
    if (!run.length) return;
    if (run.length === 1) run.push([Math.min(100, run[0][0] + (n > 1 ? 100 / (n - 1) / 2 : 0)) || 100, run[0][1]]);
    line += 'M' + run.map(function (p) { return p[0].toFixed(2) + ' ' + p[1]; }).join('L');
    area += 'M' + run[0][0].toFixed(2) + ' 40L' + run.map(function (p) { return p[0].toFixed(2) + ' ' + p[1]; }).join('L') +
      'L' + run[run.length - 1][0].toFixed(2) + ' 40Z';
    run = [];
  };
  pts.forEach(function (val, i) {
    if (typeof val === 'number' && isFinite(val)) run.push([x(i), y(val)]);
    else flush();
  });
  flush();
  e.line.setAttribute('d', line);
  e.area.setAttribute('d', area);
  if (hasTarget) {
    var ty = y(tile.target);
    e.tline.setAttribute('y1', ty);
    e.tline.setAttribute('y2', ty);
    e.tline.setAttribute('visibility', 'visible');
  } else {
    e.tline.setAttribute('visibility', 'hidden');
  }
}

function renderAll() {
  layout(false);
  state.order.forEach(renderTile);
  renderFeedBanner();
}

// ------------------------------------------------------------ header/clock
function renderHeader() {
  if (state.title) {
    $('title').textContent = state.title;
    document.title = state.title + ' · Pulseboard wall';
  }
  if (state.asOf) {
    var d = new Date(state.asOf);
    if (!isNaN(d)) {
      $('asof-time').textContent = timeText(d, state.tz);
      $('asof-date').textContent = shortDateText(d, state.tz);
    }
  }
}

function tickClock() {
  // Event-time servers (replays, the demo): the clock is the event clock, not the browser's.
  var eventTime = state.clock === 'event';
  var now = eventTime && state.asOf ? new Date(state.asOf) : new Date();
  $('clock-time').textContent = timeText(now, state.tz);
  $('clock-date').textContent = shortDateText(now, state.tz) + (state.tz ? ' · ' + zoneCity(state.tz) : '') +
    (eventTime ? ' · event time' : '');
}

// ------------------------------------------------------------ frame logic
function minuteOf(iso) {
  var t = Date.parse(iso);
  return isNaN(t) ? null : Math.floor(t / 60000);
}

/** Extend trends like the server does: a new point per minute of as_of, else replace the last point. */
function advanceTrends(asOf, changed) {
  var m = minuteOf(asOf);
  if (m === null) return;
  var moved = state.trendMinute === null || m !== state.trendMinute;
  state.order.forEach(function (id) {
    var t = state.trends[id] || (state.trends[id] = []);
    var has = Object.prototype.hasOwnProperty.call(changed, id);
    var v = has ? changed[id].value : (state.tiles[id] ? state.tiles[id].value : null);
    if (moved || t.length === 0) {
      t.push(v === undefined ? null : v);
      while (t.length > TREND_POINTS) t.shift();
    } else if (has) {
      t[t.length - 1] = v;
    }
  });
  state.trendMinute = m;
}

function applySnapshot(msg) {
  state.epoch = msg.epoch;
  state.seq = msg.seq;
  if (msg.title) state.title = msg.title;
  serverStaleAfter(msg);
  if (msg.tz) state.tz = msg.tz;
  var tiles = msg.tiles || {};
  var ids = Object.keys(tiles);
  var known = state.order.filter(function (id) { return tiles[id]; });
  // Keep the REST tile order; tiles it does not know go last, in snapshot order.
  var order = known.concat(ids.filter(function (id) { return known.indexOf(id) < 0; }));
  if (known.length !== ids.length && !state.orderPending) fetchOrder();
  state.order = order;
  state.tiles = {};
  state.trends = {};
  ids.forEach(function (id) {
    var t = tiles[id];
    state.trends[id] = Array.isArray(t.trend) ? t.trend.slice(-TREND_POINTS) : [];
    var copy = Object.assign({}, t);
    delete copy.trend;
    state.tiles[id] = copy;
  });
  state.asOf = msg.as_of || firstAsOf(tiles) || state.asOf;
  if (msg.clock) state.clock = msg.clock;
  state.trendMinute = state.asOf ? minuteOf(state.asOf) : null;
  renderNotices(msg.notices);
  renderHeader();
  renderAll();
}

// Restated snapshots, failed reconciliation checks of recent periods and failed scheduled jobs (server "notices").
function renderNotices(list) {
  var box = $('notices');
  while (box.firstChild) box.removeChild(box.firstChild);
  (list || []).forEach(function (n) {
    var failed = n.kind === 'check_failed' || n.kind === 'job_failed';
    var item = div('notice notice-' + (failed ? 'failed' : 'restated'), box, 'span');
    var tag = div('notice-tag', item, 'b');
    tag.textContent = n.kind === 'job_failed' ? '■ JOB FAILED' : n.kind === 'check_failed' ? '■ CHECK FAILED' : '▲ RESTATED';
    var txt = div('notice-text', item, 'span');
    txt.textContent = ' ' + n.text;
  });
  box.hidden = !(list && list.length);
  document.body.classList.toggle('has-notices', !box.hidden);
}

function firstAsOf(tiles) {
  for (var id in tiles) if (tiles[id].as_of) return tiles[id].as_of;
  return null;
}

function applyUpdate(msg) {
  if (msg.seq <= state.seq) return;           // already have it (resume overlap)
  var changed = msg.tiles || {};
  advanceTrends(msg.as_of, changed);
  Object.keys(changed).forEach(function (id) {
    if (!state.tiles[id]) { state.order.push(id); state.trends[id] = [changed[id].value]; }
    state.tiles[id] = Object.assign({}, state.tiles[id], changed[id]);
  });
  state.seq = msg.seq;
  if (msg.as_of) state.asOf = msg.as_of;
  if (Array.isArray(msg.notices)) renderNotices(msg.notices);
  renderHeader();
  layout(false);
  state.order.forEach(renderTile);   // every trend may have a new point; 12 tiles are cheap
  renderFeedBanner();
}

function applyHeartbeat(msg) {
  if (msg.as_of) {
    advanceTrends(msg.as_of, {});
    state.asOf = msg.as_of;
    renderHeader();
    state.order.forEach(renderTile);
  }
}

function onMessage(ev) {
  var msg;
  try { msg = JSON.parse(ev.data); } catch (e) { return; }
  if (!msg || typeof msg.type !== 'string') return;
  if (msg.type === 'pong') {
    if (state.awaitingPong && state.epoch !== null) { state.lastFrameAt = performance.now(); checkStale(); }
    state.awaitingPong = false;
    return;
  }
  if (msg.type === 'error') { console.warn('pulseboard:', msg.dashboard || '', msg.message); return; }
  if (msg.type !== 'snapshot' && msg.type !== 'update' && msg.type !== 'heartbeat') return;
  // One socket, several dashboards (playlist): frames of a dashboard no longer shown are ignored.
  if (PLAYLIST && msg.dashboard !== currentView()) return;
  state.lastFrameAt = performance.now();
  state.attempt = 0;                                  // the link works: reset backoff
  document.body.classList.remove('connecting');
  if (msg.type === 'snapshot') {
    if (PLAYLIST) state.snapshots.push(msg.dashboard);
    applySnapshot(msg);
    document.body.setAttribute('data-epoch', state.epoch);
    document.body.setAttribute('data-seq', String(state.seq));
    checkStale();
    return;
  }
  if (state.epoch === null || msg.epoch !== state.epoch) {
    // The server restarted (new epoch) under us: start over with a fresh snapshot.
    state.epoch = null;
    restart('server restarted');
    return;
  }
  if (msg.type === 'update') applyUpdate(msg);
  else {
    if (typeof msg.seq === 'number' && state.seq !== null && msg.seq > state.seq) {
      restart('missed updates');                      // resume fills the gap
      return;
    }
    applyHeartbeat(msg);
  }
  document.body.setAttribute('data-seq', String(state.seq));
  checkStale();
}

// ------------------------------------------------------------- connection
function currentView() { return viewKey(SLUG, VIEW_PARAMS); }

function socketUrl() {
  var proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (PLAYLIST) return proto + '//' + window.location.host + '/ws/screens';   // multiplexed (CONTRACT §4)
  var q = new URLSearchParams(viewQuery(VIEW_PARAMS).slice(1));
  if (state.epoch !== null && state.seq !== null) {
    q.set('epoch', state.epoch);
    q.set('since', String(state.seq));
  }
  var text = q.toString();
  return proto + '//' + window.location.host + '/ws/dashboards/' + encodeURIComponent(SLUG) + (text ? '?' + text : '');
}

/** Multiplexed socket: ask for the current dashboard (resuming from epoch/seq when we have them). */
function subscribeCurrent(ws) {
  var msg = { type: 'subscribe', dashboard: SLUG, params: VIEW_PARAMS };
  if (state.epoch !== null && state.seq !== null) { msg.epoch = state.epoch; msg.since = state.seq; }
  try { ws.send(JSON.stringify(msg)); } catch (e) { /* onclose follows */ }
}

function connect() {
  state.reconnectTimer = null;
  state.reconnectAt = null;
  var ws;
  try {
    ws = new WebSocket(socketUrl());
  } catch (e) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  setConn('connecting');
  ws.onopen = function () {
    if (state.ws !== ws) return;
    state.open = true;
    state.connections = (state.connections || 0) + 1;
    document.body.setAttribute('data-connections', String(state.connections));
    setConn('live');
    if (PLAYLIST && SLUG) subscribeCurrent(ws);
    // A resumed connection with nothing missed gets no frame until the next
    // update or heartbeat.  The server answers pings after it has sent the
    // missed updates, so the first pong proves this screen is current.
    state.awaitingPong = true;
    try { ws.send('{"type":"ping"}'); } catch (e) { /* onclose follows */ }
  };
  ws.onmessage = function (ev) { if (state.ws === ws) onMessage(ev); };
  ws.onerror = function () { /* onclose follows */ };
  ws.onclose = function (ev) {
    if (state.ws !== ws) return;
    state.ws = null;
    state.open = false;
    state.lastClose = { code: ev.code, reason: ev.reason, at: performance.now() };
    checkStale();
    scheduleReconnect();
  };
}

function restart(why) {
  var ws = state.ws;
  state.ws = null;
  state.open = false;
  if (ws) { try { ws.close(4000, why); } catch (e) { /* ignore */ } }
  state.lastClose = { code: 4000, reason: why, at: performance.now() };
  // A reconnect we chose (new epoch, gap) is not an outage: only silence makes it stale.
  if (why !== 'silent') state.graceUntil = performance.now() + 3000;
  checkStale();
  scheduleReconnect();
}

function backoffMs(attempt) {
  var ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, attempt));
  return ceiling / 2 + Math.random() * ceiling / 2;   // "equal jitter": never 0, never in lockstep
}

function scheduleReconnect() {
  if (state.reconnectTimer !== null) return;
  var delay = backoffMs(state.attempt);
  state.attempt += 1;
  state.reconnectAt = performance.now() + delay;
  setConn('reconnecting');
  state.reconnectTimer = window.setTimeout(connect, delay);
}

function setConn(kind) {
  var el = $('conn');
  el.className = 'conn ' + kind;
  $('conn-text').textContent = kind === 'live' ? 'LIVE' : kind === 'connecting' ? 'CONNECTING' : 'OFFLINE';
  document.body.classList.toggle('connecting', kind !== 'live' && state.lastFrameAt === null);
}

// ------------------------------------------------------------------ stale
function ago(ms) {
  var s = Math.max(0, Math.floor(ms / 1000));
  return valueText(s, 's');
}

function checkStale() {
  var now = performance.now();
  var since = state.lastFrameAt === null ? now - state.loadedAt : now - state.lastFrameAt;
  var down = !state.open && !(state.graceUntil && now < state.graceUntil);
  var silent = since > STALE_AFTER_MS;
  var stale = (down && (state.lastFrameAt !== null || since > STALE_AFTER_MS)) || silent;
  if (stale !== state.stale) {
    state.stale = stale;
    document.body.classList.toggle('stale', stale);
  }
  if (stale) {
    var reason, detail;
    if (!down) reason = 'No data from the server for ' + ago(since);
    else if (state.lastClose && state.lastClose.code === 1008 && state.lastClose.reason) {
      reason = 'Server refused: ' + state.lastClose.reason;
    } else reason = state.lastFrameAt === null ? 'Cannot reach the server' : 'Connection to the server lost';
    detail = state.lastFrameAt === null ? 'No data received yet' : 'Last data received ' + ago(since) + ' ago';
    if (state.reconnectAt !== null) {
      detail += ' · reconnecting in ' + Math.max(0, Math.ceil((state.reconnectAt - now) / 1000)) + ' s';
    } else if (state.ws && !state.open) {
      detail += ' · reconnecting…';
    }
    detail += ' · values shown may be out of date';
    $('stale-reason').textContent = reason;
    $('stale-detail').textContent = detail;
  }
  if (state.open && state.lastFrameAt !== null && now - state.lastFrameAt > SILENT_RECONNECT_MS) {
    restart('silent');
  }
}

// ------------------------------------------------------------------ start
function fetchOrder() {
  state.orderPending = true;
  var asked = currentView();
  return fetch('/api/v1/dashboards/' + encodeURIComponent(SLUG) + viewQuery(VIEW_PARAMS),
               { headers: { Accept: 'application/json' } })
    .then(function (r) {
      if (asked !== currentView()) return null;        // rotated meanwhile
      if ((r.status === 401 || r.status === 403) && !PLAYLIST) {
        // This screen has no (valid) display key: pair it (the key arrives as an HttpOnly cookie).
        window.location.replace('/pair?dashboard=' + encodeURIComponent(SLUG));
        return null;
      }
      return r.ok ? r.json() : null;
    })
    .then(function (dash) {
      if (!dash) return;
      serverStaleAfter(dash);
      var order = Array.isArray(dash.tile_order) ? dash.tile_order : Object.keys(dash.tiles || {});
      var extra = state.order.filter(function (id) { return order.indexOf(id) < 0; });
      state.order = order.concat(extra);
      if (!state.title && dash.title) state.title = dash.title;
      if (!state.tz && dash.tz) state.tz = dash.tz;
      if (state.epoch === null && dash.tiles) {
        // Nothing live yet: show the current values (no trend) while the socket connects.
        Object.keys(dash.tiles).forEach(function (id) {
          if (!state.tiles[id]) state.tiles[id] = dash.tiles[id];
        });
        if (!state.asOf && dash.as_of) state.asOf = dash.as_of;
      }
      renderHeader();
      renderAll();
      tickClock();
    })
    .catch(function () { /* the socket will bring the snapshot */ })
    .then(function () { state.orderPending = false; });
}

// --------------------------------------------------------------- playlist
/** Forget the shown dashboard (tiles, trends, epoch/seq) so the next one starts clean. */
function resetDashboard() {
  state.title = null; state.tz = null; state.order = []; state.tiles = {}; state.trends = {};
  state.epoch = null; state.seq = null; state.asOf = null; state.trendMinute = null; state.layoutKey = null;
  els = {};
  var grid = $('grid');
  while (grid.firstChild) grid.removeChild(grid.firstChild);
}

/** Show entry ``index`` of the playlist: unsubscribe the old view and subscribe the new one on the
 *  SAME socket (no reconnect); the new view's snapshot arrives on it. */
function show(index) {
  var ws = state.ws;
  var old = SLUG ? currentView() : null;
  var entry = playlist.dashboards[index];
  playlist.index = index;
  if (old !== null && ws && state.open) {
    try { ws.send(JSON.stringify({ type: 'unsubscribe', dashboard: old })); } catch (e) { /* onclose follows */ }
  }
  resetDashboard();
  SLUG = entry.dashboard;
  VIEW_PARAMS = entry.params || {};
  state.shown.push(currentView());
  document.body.setAttribute('data-view', currentView());
  document.body.setAttribute('data-playlist-index', String(index));
  $('title').textContent = entry.title || entry.dashboard;
  if (ws && state.open) subscribeCurrent(ws);
  // The view just asked for has not answered yet: give it the usual grace before STALE.
  state.lastFrameAt = performance.now();
  fetchOrder();
}

function rotate() {
  if (!playlist || playlist.dashboards.length < 2) return;
  playlist.rotations += 1;
  document.body.setAttribute('data-rotations', String(playlist.rotations));
  show((playlist.index + 1) % playlist.dashboards.length);
}

function startPlaylist() {
  return fetch('/api/v1/playlists/' + encodeURIComponent(PLAYLIST), { headers: { Accept: 'application/json' } })
    .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error('playlist ' + r.status)); })
    .then(function (pl) {
      playlist = pl;
      playlist.index = 0;
      playlist.rotations = 0;
      var every = positiveParam('interval_s', pl.interval_s || 30) * 1000;
      show(0);
      connect();
      window.setInterval(rotate, every);
    })
    .catch(function (err) {
      $('title').textContent = 'Unknown playlist ' + PLAYLIST;
      console.warn('pulseboard:', err);
    });
}

/** Kiosk: no cursor, no scrollbars (the page never scrolls), the screen kept awake where allowed. */
function kiosk() {
  document.body.classList.add('kiosk');
  var lock = null;
  var ask = function () {
    if (!('wakeLock' in navigator) || document.visibilityState !== 'visible' || lock) return;
    navigator.wakeLock.request('screen').then(function (l) {
      lock = l;
      document.body.setAttribute('data-wake-lock', 'held');
      l.addEventListener('release', function () { lock = null; document.body.setAttribute('data-wake-lock', 'released'); });
    }).catch(function () { document.body.setAttribute('data-wake-lock', 'refused'); });
  };
  document.addEventListener('visibilitychange', ask);
  ask();
}

function start() {
  if (PLAYLIST || params.get('kiosk') === '1') kiosk();
  tickClock();
  // Tick the clock on the second boundary.
  var align = function () {
    tickClock();
    window.setTimeout(align, 1000 - (Date.now() % 1000) + 5);
  };
  window.setTimeout(align, 1000 - (Date.now() % 1000) + 5);
  window.setInterval(checkStale, 250);
  window.setInterval(tickAges, 1000);
  window.setInterval(function () {
    if (state.ws && state.open) {
      try { state.ws.send('{"type":"ping"}'); } catch (e) { /* close handler reconnects */ }
    }
  }, PING_EVERY_MS);
  var resizeTimer = null;
  window.addEventListener('resize', function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () {
      layout(false);
      Object.keys(els).forEach(function (id) {
        fitValue(els[id], true);
        if (isList(state.tiles[id])) fitList(els[id]);
      });
    }, 150);
  });
  if (PLAYLIST) { startPlaylist(); return; }
  fetchOrder();
  connect();
}

// Exposed for debugging from the console (read-only use).
window.pulseboardWall = {
  state: state, staleAfterMs: function () { return STALE_AFTER_MS; }, view: currentView,
  playlist: function () { return playlist; }
};

onReady(start);
