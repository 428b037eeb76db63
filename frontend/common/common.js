/* Pulseboard: code shared by every page, as a native ES module (no build step).
 *
 *   import * as PB from '/static/common/common.js';          // or named imports
 *
 * - Formatting: the one rule every page (wall, end of day, scorecard, home) shows numbers by.
 *   Ratios as percent ("82.4 %"); durations (unit `s`) in s / min / h / d, the unit chosen by
 *   durationUnit() everywhere ("42 s", "4:05 min", "2:03:00 h", "3.0 d"); counts and other units
 *   as grouped numbers ("1,234 calls"); targets with their direction ("≤ 3.0 d"); "—" for no value.
 * - DOM: everything that puts data on a page goes through el()/text nodes, never innerHTML, so
 *   KPI names, owners and commentary are always text, whatever they contain.
 * - Dates in a dashboard's zone, calendar arithmetic on YYYY-MM-DD labels.
 * - HTTP: JSON requests with the browser session (the HttpOnly cookie from /login).
 */

// ------------------------------------------------------------------ DOM
/** el('td', {class: 'num', 'data-kpi': k}, child, 'text', ...): children are nodes or text. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  if (attrs) {
    Object.keys(attrs).forEach(function (k) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'hidden') node.hidden = true;
      else node.setAttribute(k, v === true ? '' : String(v));
    });
  }
  children.forEach(function (c) { append(node, c); });
  return node;
}

export function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
  node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

export function $(id) { return document.getElementById(id); }

// ----------------------------------------------------------- formatting
/** RAG status in shape + word (+ colour on the page), never colour alone. */
export const STATUS = {
  green: { shape: '●', word: 'OK', label: 'on target' },
  amber: { shape: '▲', word: 'WATCH', label: 'within the amber band' },
  red: { shape: '■', word: 'ALERT', label: 'off target' },
  nodata: { shape: '○', word: 'NO DATA', label: 'no value' }
};

export const MINUS = '−';

/** Alarm severity (ITU-T X.733) as shape + word (+ colour), never colour alone; most severe first. */
export const SEVERITY = {
  critical: { shape: '◆', word: 'CRITICAL', rank: 0 },
  major: { shape: '■', word: 'MAJOR', rank: 1 },
  minor: { shape: '▲', word: 'MINOR', rank: 2 },
  warning: { shape: '▼', word: 'WARNING', rank: 3 },
  indeterminate: { shape: '○', word: 'INDETERMINATE', rank: 4 },
  none: { shape: '·', word: 'NO SEVERITY', rank: 5 }
};

/** The SEVERITY entry of a severity text (unknown or missing: ``none``). */
export function severityOf(sev) { return SEVERITY[sev] || SEVERITY.none; }

function pad2(n) { return (n < 10 ? '0' : '') + n; }

export function isNum(v) { return typeof v === 'number' && isFinite(v); }

/** A whole number with thousands separators: 38715 -> "38,715". */
export function grouped(n) { return Math.round(n).toLocaleString('en-US'); }

/** "m:ss" under an hour, "h:mm:ss" from an hour (of |seconds|, rounded to the second). */
export function clockText(seconds) {
  const t = Math.round(Math.abs(seconds));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  return h > 0 ? h + ':' + pad2(m) + ':' + pad2(s) : m + ':' + pad2(s);
}

/** The unit a duration is shown in, by its size (|seconds| rounded): under a minute 's', under an
 *  hour 'min' (m:ss), under two days 'h' (h:mm:ss), else 'd' (days, one decimal).  Every page, axis
 *  and difference picks its unit here. */
export function durationUnit(seconds) {
  const r = Math.round(Math.abs(seconds));
  if (r < 60) return 's';
  if (r < 3600) return 'min';
  if (r < 2 * 86400) return 'h';
  return 'd';
}

/** {num, unit} of |seconds| in its durationUnit; ``fine`` keeps one decimal under 10 s (differences). */
function durationParts(seconds, fine) {
  const a = Math.abs(seconds);
  const unit = durationUnit(a);
  if (unit === 's') return { num: fine && a < 10 ? a.toFixed(1) : String(Math.round(a)), unit: 's' };
  if (unit === 'd') return { num: (a / 86400).toFixed(1), unit: 'd' };
  return { num: clockText(a), unit: unit };
}

/** {num, unit} of a KPI value: ratio -> "82.4" "%"; s -> "42" "s" / "1:14" "min" / "2:03:00" "h" / "3.0" "d";
 *  counts and other units -> grouped integer (two decimals when not whole), the unit as given; none -> "—" "". */
export function formatValue(value, unit) {
  if (!isNum(value)) return { num: '—', unit: '' };
  switch (unit) {
    case 'ratio':
      return { num: (value * 100).toFixed(1), unit: '%' };
    case 's': {
      const f = durationParts(value, false);
      return { num: (value < 0 && f.num !== '0' ? MINUS : '') + f.num, unit: f.unit };
    }
    default:
      return { num: Number.isInteger(value) ? value.toLocaleString('en-US') : value.toFixed(2), unit: unit || '' };
  }
}

/** formatValue as one string: "3.0 d", "82.4 %", "1,234 calls", "—". */
export function valueText(value, unit) {
  const f = formatValue(value, unit);
  return f.unit && f.num !== '—' ? f.num + ' ' + f.unit : f.num;
}

/** "≥ 80.0 %" / "≤ 3.0 d" ("≤" for direction 'lower', else "≥"); "" without a target. */
export function targetText(target, unit, direction) {
  if (!isNum(target)) return '';
  return (direction === 'lower' ? '≤ ' : '≥ ') + valueText(target, unit);
}

function signed(text, v) { return (v > 0 ? '+' : v < 0 ? MINUS : '±') + text; }

/** A signed difference in the KPI's unit: ratio -> percentage points, s -> the durationUnit of the
 *  difference (one decimal under 10 s), counts -> grouped number. */
export function deltaText(diff, unit) {
  if (!isNum(diff)) return '—';
  const a = Math.abs(diff);
  if (unit === 'ratio') {
    const pp = a * 100;
    return signed((pp < 1 ? pp.toFixed(2) : pp.toFixed(1)) + ' pp', diff);
  }
  if (unit === 's') {
    const f = durationParts(a, true);
    return signed(f.num + ' ' + f.unit, diff);
  }
  return signed(Number.isInteger(a) ? a.toLocaleString('en-US') : a.toFixed(2), diff) + (unit ? ' ' + unit : '');
}

/** A relative change: "+4.2 %", "−12 %", "×43" from 9 times up (reads better than "+4245 %"). */
export function ratioText(r) {
  if (!isNum(r)) return '';
  if (r >= 9) return '×' + grouped(1 + r);
  const p = Math.abs(r * 100);
  return signed((p < 10 ? p.toFixed(1) : String(Math.round(p))) + ' %', r);
}

/** 'good' | 'bad' | 'flat' | '' for a change of a KPI with this direction. */
export function goodness(diff, direction) {
  if (!isNum(diff)) return '';
  if (diff === 0) return 'flat';
  const up = diff > 0;
  return (direction === 'lower' ? !up : up) ? 'good' : 'bad';
}

/** 'green' | 'amber' | 'red' | 'nodata' (a target but no status) | 'none' (no target). */
export function statusKey(status, hasTarget) {
  if (STATUS[status]) return status;
  return hasTarget ? 'nodata' : 'none';
}

/** A status badge: shape + word (+ colour), never colour alone. */
export function badge(status, hasTarget) {
  const key = statusKey(status, hasTarget);
  if (key === 'none') return el('span', { class: 'badge s-none', title: 'no target' }, '—');
  const st = STATUS[key];
  return el('span', { class: 'badge s-' + key, 'data-status': key, title: st.label },
    el('span', { class: 'shape', 'aria-hidden': 'true' }, st.shape), el('span', { class: 'word' }, st.word));
}

export function ownerNodes(owner) {
  if (!owner) return el('span', { class: 'muted' }, '—');
  return el('span', { class: 'owner' },
    el('span', { class: 'role' }, owner.role || ''),
    owner.person ? el('span', { class: 'person' }, owner.person) : null);
}

/** {scale, label} for a chart axis of seconds whose typical size is ``typical`` (e.g. the target):
 *  the same unit as durationUnit() picks for the text. */
export function timeAxis(typical) {
  return {
    s: { scale: 1, label: 'seconds' }, min: { scale: 60, label: 'minutes' },
    h: { scale: 3600, label: 'hours' }, d: { scale: 86400, label: 'days' }
  }[durationUnit(typical || 0)];
}

// ------------------------------------------------------------- dates
const fmtCache = {};
function dtf(tz, opts, key) {
  const k = key + '|' + (tz || '');
  if (!fmtCache[k]) {
    try { fmtCache[k] = new Intl.DateTimeFormat('en-GB', Object.assign({ timeZone: tz || undefined }, opts)); }
    catch (e) { fmtCache[k] = new Intl.DateTimeFormat('en-GB', opts); }   // a zone this browser lacks: local time
  }
  return fmtCache[k];
}

function toDate(when) { return when instanceof Date ? when : new Date(when); }

/** "1 Sept 1999, 09:00" in ``tz``. */
export function dateTimeText(iso, tz) {
  if (!iso) return '—';
  const d = toDate(iso);
  if (isNaN(d)) return String(iso);
  return dtf(tz, { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23' }, 'dt').format(d);
}

/** "09:00:05" (24 h) of an instant (Date or ISO) in ``tz``. */
export function timeText(when, tz) {
  return dtf(tz, { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }, 'time').format(toDate(when));
}

/** "14:32" (hh:mm, 24 h) of an instant (Date or ISO) in ``tz``. */
export function hhmmText(when, tz) {
  return dtf(tz, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }, 'hhmm').format(toDate(when));
}

/** "Mon 2 Aug 1999" of an instant (Date or ISO) in ``tz``. */
export function shortDateText(when, tz) {
  return dtf(tz, { weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' }, 'sdate').format(toDate(when));
}

/** "Jerusalem" for "Asia/Jerusalem"; "" without a zone. */
export function zoneCity(tz) { return tz ? tz.split('/').pop().replace(/_/g, ' ') : ''; }

/** Calendar date (YYYY-MM-DD) -> "Monday 2 August 1999" (no zone arithmetic: it is a label). */
export function dayLabel(ymd) {
  const p = ymd.split('-').map(Number);
  const d = new Date(Date.UTC(p[0], p[1] - 1, p[2], 12));
  return dtf('UTC', { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' }, 'day').format(d);
}

/** YYYY-MM -> "August 1999". */
export function monthLabel(ym) {
  const p = ym.split('-').map(Number);
  return dtf('UTC', { month: 'long', year: 'numeric' }, 'month').format(new Date(Date.UTC(p[0], p[1] - 1, 15)));
}

/** YYYY-MM -> "Aug 99". */
export function shortMonth(ym) {
  const p = ym.split('-').map(Number);
  return dtf('UTC', { month: 'short', year: '2-digit' }, 'smonth').format(new Date(Date.UTC(p[0], p[1] - 1, 15)));
}

export function addDays(ymd, n) {
  const p = ymd.split('-').map(Number);
  const d = new Date(Date.UTC(p[0], p[1] - 1, p[2] + n, 12));
  return d.getUTCFullYear() + '-' + pad2(d.getUTCMonth() + 1) + '-' + pad2(d.getUTCDate());
}

export function addMonths(ym, n) {
  const p = ym.split('-').map(Number);
  const m = p[0] * 12 + (p[1] - 1) + n;
  return Math.floor(m / 12) + '-' + pad2(m % 12 + 1);
}

export function validDay(ymd) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(ymd)) return false;
  return addDays(ymd, 0) === ymd;
}

// -------------------------------------------------------------- HTTP
/** The sign-in page, coming back to ``path`` (default: this page) afterwards. */
export function signInUrl(path) {
  return '/login?next=' + encodeURIComponent(path === undefined ? location.pathname + location.search : path);
}

/** Where to go after signing in: ``raw`` resolved against this page's origin, as an absolute URL,
 *  if it stays on this origin, else this origin's "/" ("//host", "/\host", tab and newline
 *  variants, "/.//host" and absolute URLs to elsewhere are refused: no open redirect).  The
 *  answer is absolute, so a path that normalises to "//host" cannot become protocol-relative. */
export function safeNext(raw) {
  const home = location.origin + '/';
  if (!raw || raw.charAt(0) !== '/' || /[\u0000-\u001f\u007f\\]/.test(raw)) return home;
  let url;
  try { url = new URL(raw, location.origin); } catch (e) { return home; }
  if (url.origin !== location.origin || /^[/\\]{2}/.test(raw) || /^[/\\]{2}/.test(url.pathname)) return home;
  return url.href;
}

/** JSON request -> Promise of {status, ok, body, text, headers} (body null when not JSON); a network
 *  error gives status 0.  ``opts.signIn`` (default true): on 401 send the browser to /login and back. */
export function request(method, url, payload, opts) {
  const signIn = !opts || opts.signIn !== false;
  const init = { method: method, headers: { Accept: 'application/json' }, cache: 'no-store',
                 credentials: 'same-origin' };   // the HttpOnly session cookie from /login
  if (payload !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(payload);
  }
  return fetch(url, init).then(function (resp) {
    if (resp.status === 401 && signIn) {
      // Not signed in (or the key was revoked): sign in, then come back here.
      window.location.replace(signInUrl());
    }
    return resp.text().then(function (txt) {
      let body = null;
      try { body = txt ? JSON.parse(txt) : null; } catch (e) { body = null; }
      return { status: resp.status, ok: resp.ok, body: body, text: txt, headers: resp.headers };
    });
  }, function (err) {
    return { status: 0, ok: false, body: null, text: String(err), headers: new Headers() };
  });
}

export function getJSON(url, opts) { return request('GET', url, undefined, opts); }
export function postJSON(url, payload, opts) { return request('POST', url, payload, opts); }

/** The reason of a failed answer, for people: the problem's detail or title, else the status. */
export function problemText(resp) {
  if (resp.body && (resp.body.detail || resp.body.title)) {
    return typeof resp.body.detail === 'string' ? resp.body.detail : (resp.body.title || '');
  }
  return resp.status ? 'HTTP ' + resp.status : 'the server did not answer (' + resp.text + ')';
}

// -------------------------------------------------------------- paths
/** ['day', slug, period] from /day/{slug}/{period} (decoded). */
export function pathParts() {
  return location.pathname.split('/').filter(Boolean).map(function (p) {
    try { return decodeURIComponent(p); } catch (e) { return p; }
  });
}

export function enc(s) { return encodeURIComponent(s); }

// ------------------------------------------------------------- charts
/** Plotly renders a small HTML subset in labels: keep data text literal. */
export function plotText(s) {
  return String(s === null || s === undefined ? '' : s).replace(/[<>&]/g, function (c) {
    return { '<': '‹', '>': '›', '&': '＆' }[c];
  });
}

/** Page-level CSS variables, so charts use the stylesheet's colours. */
export function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name);
  return (v && v.trim()) || fallback;
}

/** Resize every Plotly chart to its container before printing and after. */
export function plotlyPrintResize() {
  function resize() {
    if (!window.Plotly) return;
    const plots = document.querySelectorAll('.js-plotly-plot');
    for (let i = 0; i < plots.length; i++) {
      try { window.Plotly.Plots.resize(plots[i]); } catch (e) { /* detached */ }
    }
  }
  window.addEventListener('beforeprint', resize);
  window.addEventListener('afterprint', resize);
  if (window.matchMedia) {
    const mq = window.matchMedia('print');
    if (mq.addEventListener) mq.addEventListener('change', resize);
  }
}

/** Run ``fn`` once the document is parsed (module scripts already are, but this keeps pages honest). */
export function onReady(fn) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fn);
  else fn();
}
