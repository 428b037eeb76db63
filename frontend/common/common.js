/* Pulseboard: helpers shared by the end-of-day and scorecard pages.
 *
 * Plain script (no modules, no build); exposes window.PB.  Everything that puts
 * data on the page goes through el()/text nodes: never innerHTML, so KPI names,
 * owners and commentary are always text, whatever they contain.
 */
(function () {
  'use strict';

  // ------------------------------------------------------------------ DOM
  /** el('td', {class: 'num', 'data-kpi': k}, child, 'text', ...): children are nodes or text. */
  function el(tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k === 'text') node.textContent = String(v);
        else if (k === 'hidden') node.hidden = true;
        else node.setAttribute(k, v === true ? '' : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function $(id) { return document.getElementById(id); }

  // ----------------------------------------------------------- formatting
  var STATUS = {
    green: { shape: '●', word: 'OK', label: 'on target' },
    amber: { shape: '▲', word: 'WATCH', label: 'within the amber band' },
    red: { shape: '■', word: 'ALERT', label: 'off target' },
    nodata: { shape: '○', word: 'NO DATA', label: 'no value' }
  };

  function pad2(n) { return (n < 10 ? '0' : '') + n; }

  function clockText(totalSeconds) {
    var t = Math.round(Math.abs(totalSeconds));
    var h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
    return h > 0 ? h + ':' + pad2(m) + ':' + pad2(s) : m + ':' + pad2(s);
  }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  function grouped(n) { return Math.round(n).toLocaleString('en-US'); }

  /** {num, unit} of a value: ratio -> "82.4" "%", s -> "42" "s" / "1:14" "min" / "2:03:00" "h" / "3.2" "d",
   *  calls (and other counts) -> grouped integer. */
  function formatValue(value, unit) {
    if (!isNum(value)) return { num: '—', unit: '' };
    switch (unit) {
      case 'ratio':
        return { num: (value * 100).toFixed(1), unit: '%' };
      case 's': {
        var r = Math.round(value);
        if (Math.abs(r) < 60) return { num: String(r), unit: 's' };
        if (Math.abs(r) < 3600) return { num: clockText(value), unit: 'min' };
        if (Math.abs(r) < 2 * 86400) return { num: clockText(value), unit: 'h' };
        return { num: (value / 86400).toFixed(1), unit: 'd' };
      }
      default:
        return { num: Number.isInteger(value) ? value.toLocaleString('en-US') : value.toFixed(2), unit: unit || '' };
    }
  }

  function valueText(value, unit) {
    var f = formatValue(value, unit);
    return f.unit && f.num !== '—' ? f.num + ' ' + f.unit : f.num;
  }

  /** "≥ 80.0 %" / "≤ 30 s" / "" without a target. */
  function targetText(target, unit, direction) {
    if (!isNum(target)) return '';
    return (direction === 'lower' ? '≤ ' : '≥ ') + valueText(target, unit);
  }

  var MINUS = '−';
  function signed(text, v) { return (v > 0 ? '+' : v < 0 ? MINUS : '±') + text; }

  /** A signed difference in the KPI's unit: ratio -> percentage points, s -> s or min, counts -> integer. */
  function deltaText(diff, unit) {
    if (!isNum(diff)) return '—';
    var a = Math.abs(diff);
    if (unit === 'ratio') {
      var pp = a * 100;
      return signed((pp < 1 ? pp.toFixed(2) : pp.toFixed(1)) + ' pp', diff);
    }
    if (unit === 's') {
      if (a < 60) return signed((a < 10 ? a.toFixed(1) : String(Math.round(a))) + ' s', diff);
      if (a < 3600) return signed(clockText(a) + ' min', diff);
      if (a < 86400) return signed((a / 3600).toFixed(1) + ' h', diff);
      return signed((a / 86400).toFixed(1) + ' d', diff);
    }
    return signed(Number.isInteger(a) ? a.toLocaleString('en-US') : a.toFixed(2), diff) + (unit ? ' ' + unit : '');
  }

  function ratioText(r) {
    if (!isNum(r)) return '';
    if (r >= 9) return '×' + grouped(1 + r);          // "×43" reads better than "+4245 %"
    var p = Math.abs(r * 100);
    return signed((p < 10 ? p.toFixed(1) : String(Math.round(p))) + ' %', r);
  }

  /** 'good' | 'bad' | 'flat' | '' for a change of a KPI with this direction. */
  function goodness(diff, direction) {
    if (!isNum(diff)) return '';
    if (diff === 0) return 'flat';
    var up = diff > 0;
    return (direction === 'lower' ? !up : up) ? 'good' : 'bad';
  }

  function statusKey(status, hasTarget) {
    if (STATUS[status]) return status;
    return hasTarget ? 'nodata' : 'none';
  }

  /** A status badge: shape + word (+ colour), never colour alone. */
  function badge(status, hasTarget) {
    var key = statusKey(status, hasTarget);
    if (key === 'none') return el('span', { class: 'badge s-none', title: 'no target' }, '—');
    var st = STATUS[key];
    return el('span', { class: 'badge s-' + key, 'data-status': key, title: st.label },
      el('span', { class: 'shape', 'aria-hidden': 'true' }, st.shape), el('span', { class: 'word' }, st.word));
  }

  function ownerNodes(owner) {
    if (!owner) return el('span', { class: 'muted' }, '—');
    return el('span', { class: 'owner' },
      el('span', { class: 'role' }, owner.role || ''),
      owner.person ? el('span', { class: 'person' }, owner.person) : null);
  }

  // ------------------------------------------------------------- dates
  var fmtCache = {};
  function dtf(tz, opts, key) {
    var k = key + '|' + (tz || '');
    if (!fmtCache[k]) {
      try { fmtCache[k] = new Intl.DateTimeFormat('en-GB', Object.assign({ timeZone: tz || undefined }, opts)); }
      catch (e) { fmtCache[k] = new Intl.DateTimeFormat('en-GB', opts); }
    }
    return fmtCache[k];
  }

  /** "1 Sept 1999, 09:00" in ``tz``. */
  function dateTimeText(iso, tz) {
    if (!iso) return '—';
    var d = new Date(iso);
    if (isNaN(d)) return String(iso);
    return dtf(tz, { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit',
      hourCycle: 'h23' }, 'dt').format(d);
  }

  /** Calendar date (YYYY-MM-DD) -> "Monday 2 August 1999" (no zone arithmetic: it is a label). */
  function dayLabel(ymd) {
    var p = ymd.split('-').map(Number);
    var d = new Date(Date.UTC(p[0], p[1] - 1, p[2], 12));
    return dtf('UTC', { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' }, 'day').format(d);
  }

  function monthLabel(ym) {
    var p = ym.split('-').map(Number);
    return dtf('UTC', { month: 'long', year: 'numeric' }, 'month').format(new Date(Date.UTC(p[0], p[1] - 1, 15)));
  }

  function shortMonth(ym) {
    var p = ym.split('-').map(Number);
    return dtf('UTC', { month: 'short', year: '2-digit' }, 'smonth').format(new Date(Date.UTC(p[0], p[1] - 1, 15)));
  }

  function addDays(ymd, n) {
    var p = ymd.split('-').map(Number);
    var d = new Date(Date.UTC(p[0], p[1] - 1, p[2] + n, 12));
    return d.getUTCFullYear() + '-' + pad2(d.getUTCMonth() + 1) + '-' + pad2(d.getUTCDate());
  }

  function addMonths(ym, n) {
    var p = ym.split('-').map(Number);
    var m = p[0] * 12 + (p[1] - 1) + n;
    return Math.floor(m / 12) + '-' + pad2(m % 12 + 1);
  }

  function validDay(ymd) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(ymd)) return false;
    return addDays(ymd, 0) === ymd;
  }

  // -------------------------------------------------------------- HTTP
  /** GET/POST JSON -> {status, ok, body} (body null when not JSON); network errors -> status 0. */
  function request(method, url, payload) {
    var opts = { method: method, headers: { Accept: 'application/json' }, cache: 'no-store' };
    if (payload !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(payload);
    }
    opts.credentials = 'same-origin';   // the HttpOnly session cookie from /login
    return fetch(url, opts).then(function (resp) {
      if (resp.status === 401) {
        // Not signed in (or the key was revoked): sign in, then come back here.
        window.location.replace('/login?next=' + encodeURIComponent(window.location.pathname + window.location.search));
      }
      return resp.text().then(function (txt) {
        var body = null;
        try { body = txt ? JSON.parse(txt) : null; } catch (e) { body = null; }
        return { status: resp.status, ok: resp.ok, body: body, text: txt };
      });
    }, function (err) {
      return { status: 0, ok: false, body: null, text: String(err) };
    });
  }

  function getJSON(url) { return request('GET', url); }
  function postJSON(url, payload) { return request('POST', url, payload); }

  function problemText(resp) {
    if (resp.body && (resp.body.detail || resp.body.title)) {
      return typeof resp.body.detail === 'string' ? resp.body.detail : (resp.body.title || '');
    }
    return resp.status ? 'HTTP ' + resp.status : 'the server did not answer (' + resp.text + ')';
  }

  // -------------------------------------------------------------- paths
  /** ['day', slug, period] from /day/{slug}/{period} (decoded). */
  function pathParts() {
    return location.pathname.split('/').filter(Boolean).map(function (p) {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
  }

  function enc(s) { return encodeURIComponent(s); }

  /** Plotly renders a small HTML subset in labels: keep data text literal. */
  function plotText(s) { return String(s === null || s === undefined ? '' : s).replace(/[<>&]/g, function (c) {
    return { '<': '‹', '>': '›', '&': '＆' }[c];
  }); }

  /** Page-level CSS variables, so charts use the stylesheet's colours. */
  function cssVar(name, fallback) {
    var v = getComputedStyle(document.documentElement).getPropertyValue(name);
    return (v && v.trim()) || fallback;
  }

  /** Resize every Plotly chart to its container before printing and after. */
  function plotlyPrintResize() {
    function resize() {
      if (!window.Plotly) return;
      var plots = document.querySelectorAll('.js-plotly-plot');
      for (var i = 0; i < plots.length; i++) {
        try { window.Plotly.Plots.resize(plots[i]); } catch (e) { /* detached */ }
      }
    }
    window.addEventListener('beforeprint', resize);
    window.addEventListener('afterprint', resize);
    if (window.matchMedia) {
      var mq = window.matchMedia('print');
      if (mq.addEventListener) mq.addEventListener('change', resize);
    }
  }

  /** {scale, label} for an axis of seconds whose typical size is ``typical`` (e.g. the target). */
  function timeAxis(typical) {
    var t = Math.abs(typical || 0);
    if (t >= 2 * 86400) return { scale: 86400, label: 'days' };
    if (t >= 2 * 3600) return { scale: 3600, label: 'hours' };
    if (t >= 300) return { scale: 60, label: 'minutes' };
    return { scale: 1, label: 'seconds' };
  }

  window.PB = {
    el: el, append: append, clear: clear, $: $,
    STATUS: STATUS, formatValue: formatValue, valueText: valueText, targetText: targetText,
    deltaText: deltaText, ratioText: ratioText, goodness: goodness, statusKey: statusKey, badge: badge,
    ownerNodes: ownerNodes, isNum: isNum, grouped: grouped,
    dateTimeText: dateTimeText, dayLabel: dayLabel, monthLabel: monthLabel, shortMonth: shortMonth,
    addDays: addDays, addMonths: addMonths, validDay: validDay,
    getJSON: getJSON, postJSON: postJSON, problemText: problemText,
    pathParts: pathParts, enc: enc, timeAxis: timeAxis, plotText: plotText, cssVar: cssVar, plotlyPrintResize: plotlyPrintResize
  };
})();
