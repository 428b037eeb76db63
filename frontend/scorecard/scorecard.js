/* Pulseboard monthly scorecard: /scorecard/{slug}/{YYYY-MM}
 *
 * GET /api/v1/scorecards/{slug}/{month} (KPIs already in review-agenda order),
 * POST .../commentary {kpi, text, author} (then reload the card),
 * POST .../publish {by} (422 lists red KPIs without a note; 409 when already published).
 * Trend sparklines are small static Plotly charts (one per row), like the day page's charts.
 *
 * A published card shows the numbers it was published with; a later restatement shows beside them
 * (#restated-after) and reopens notes on the KPIs that moved (k.notes_allowed) and publishing.
 * Each KPI's breaches this month (c.breaches) show with the owner's explanation (li.explanation).
 * Notes are written as the signed-in key's holder (GET /api/v1/session).
 *
 * Test hooks: body[data-state] = loading | ready | not-cut | error; body[data-published] = true|false;
 * body[data-sparklines] = ready once every sparkline is drawn; rows tr[data-kpi][data-rank][data-status];
 * notes li.note; flags .needs-note; forms form.note-form; #publish-errors lists li[data-kpi].
 */
import * as PB from '../common/common.js';

const el = PB.el, $ = PB.$;

var parts = PB.pathParts();            // ['scorecard', slug, month]
var slug = parts[1] || '', month = parts[2] || '';
var api = '/api/v1/scorecards/' + PB.enc(slug) + '/' + PB.enc(month);
var AUTHOR_KEY = 'pulseboard.author';
var card = null;
var dashTitle = null;
var renderSeq = 0;
var holder = null;   // the signed-in key's holder: the author of notes

function setState(name, value) { document.body.setAttribute('data-' + name, value); }

function rememberedAuthor() {
  try { return localStorage.getItem(AUTHOR_KEY) || ''; } catch (e) { return ''; }
}
function remember(author) {
  try { localStorage.setItem(AUTHOR_KEY, author); } catch (e) { /* private mode */ }
}

// ------------------------------------------------------------- header
function renderNav() {
  var valid = /^\d{4}-\d{2}$/.test(month) && Number(month.slice(5)) >= 1 && Number(month.slice(5)) <= 12;
  $('month-label').textContent = valid ? PB.monthLabel(month) : month;
  document.title = 'Scorecard · ' + month + ' · Pulseboard';
  if (!valid) {
    $('prev-month').hidden = true;
    $('next-month').hidden = true;
    return;
  }
  $('prev-month').href = '/scorecard/' + PB.enc(slug) + '/' + PB.addMonths(month, -1);
  $('next-month').href = '/scorecard/' + PB.enc(slug) + '/' + PB.addMonths(month, 1);
  var links = PB.clear($('day-links'));
  var first = month + '-01';
  for (var d = first; d.slice(0, 7) === month; d = PB.addDays(d, 1)) {
    links.appendChild(el('a', { href: '/day/' + PB.enc(slug) + '/' + d, title: PB.dayLabel(d) }, String(Number(d.slice(8)))));
  }
  $('days').hidden = false;
}

function chip(key, value, cls, attrs) {
  var a = Object.assign({ class: 'chip' + (cls ? ' ' + cls : '') }, attrs || {});
  return el('span', a, el('span', { class: 'k' }, key), el('span', { class: 'v' }, value));
}

function renderMeta(c) {
  var meta = PB.clear($('meta'));
  var restated = c.snapshot.status === 'restated';
  meta.appendChild(chip('Snapshot', 'v' + c.snapshot.version + ' · ' + (restated ? 'RESTATED' : 'FINAL'),
    restated ? 'restated' : 'ok', { id: 'status-chip', 'data-status': c.snapshot.status }));
  meta.appendChild(chip('Cut', PB.dateTimeText(c.snapshot.cut_at, c.tz)));
  var n = { red: 0, amber: 0, green: 0 };
  c.kpis.forEach(function (k) { if (n[k.status] !== undefined) n[k.status] += 1; });
  meta.appendChild(chip('Alerts', String(n.red), n.red ? 'bad' : 'ok'));
  meta.appendChild(chip('Watch', String(n.amber), n.amber ? 'warn' : ''));
  meta.appendChild(chip('OK', String(n.green), 'ok'));
  var missing = c.kpis.filter(function (k) { return k.needs_note; }).length;
  if (!c.published) meta.appendChild(chip('Notes missing', String(missing), missing ? 'bad' : 'ok', { id: 'missing-chip' }));
  meta.appendChild(chip('State', c.published ? 'PUBLISHED' : 'DRAFT', c.published ? 'ok' : 'warn', { id: 'publish-chip' }));
  var kind = $('draft-state');
  kind.textContent = c.published ? 'Published' : 'Draft';
  kind.className = 'kind state-kind ' + (c.published ? 'is-published' : 'is-draft');
  kind.hidden = false;
  $('tz').textContent = c.tz;
}

function renderBanners(c) {
  var restated = c.snapshot.status === 'restated';
  $('restated').hidden = !restated;
  if (restated) {
    $('restated-text').textContent = 'The month\'s snapshot is version ' + c.snapshot.version +
      '; earlier numbers were replaced. Cause: ' + (c.snapshot.cause || 'not recorded') + '.';
    PB.getJSON('/api/v1/snapshots/' + PB.enc(slug) + '/month/' + PB.enc(month) + '/versions').then(function (resp) {
      if (!resp.ok || !resp.body) return;
      var box = PB.clear($('restated-versions'));
      box.appendChild(el('strong', {}, 'Versions: '));
      (resp.body.versions || []).forEach(function (v, i) {
        if (i) box.appendChild(document.createTextNode(' · '));
        box.appendChild(el('span', { class: 'version', 'data-version': v.version },
          'v' + v.version + ' ' + v.status + ' (cut ' + PB.dateTimeText(v.cut_at, v.tz) + ')' + (v.cause ? ' — ' + v.cause : '')));
      });
    });
  }
  var pub = c.published;
  var after = c.restated_after_publication;
  $('published').hidden = !pub;
  if (pub) {
    $('published-text').textContent = 'Published by ' + pub.by + ' on ' + PB.dateTimeText(pub.at, c.tz) +
      ' (snapshot version ' + pub.snapshot_version + (pub.number > 1 ? ', publication ' + pub.number : '') +
      '). The figures shown are the published ones; commentary is locked' + (after ? ' except on what moved since.' : '.');
    $('publish-errors').hidden = true;
  }
  $('restated-after').hidden = !after;
  if (after) {
    $('restated-after-text').textContent = 'Version ' + after.version + ' was cut ' + PB.dateTimeText(after.cut_at, c.tz) +
      ' after publication: ' + (after.cause || 'recomputed') + '. The owners may add notes on what moved; ' +
      'publishing again pins version ' + after.version + '.';
    var list = PB.clear($('restated-after-changes'));
    var units = {};
    c.kpis.forEach(function (k) { units[k.kpi] = k.unit; });
    after.moved.forEach(function (name) {
      var ch = after.changes[name];
      list.appendChild(el('li', { 'data-kpi': name }, name + ': ' + PB.valueText(ch.from, units[name]) + ' → ' +
        PB.valueText(ch.to, units[name]) + (ch.status_from !== ch.status_to ? ' (' + (ch.status_from || 'none') + ' → ' + (ch.status_to || 'none') + ')' : '')));
    });
  }
  document.body.classList.toggle('published', !!pub);
  setState('published', pub ? 'true' : 'false');
  $('publish-box').hidden = !!pub && !after;
}

// --------------------------------------------------------------- rows
function varianceCell(diff, ratio, unit, direction, hasTarget, cls, sub) {
  var td = el('td', { class: 'num variance ' + cls, 'data-raw': PB.isNum(diff) ? diff : '' });
  if (!PB.isNum(diff)) {
    td.appendChild(el('span', { class: 'muted' }, '—'));
    if (sub) td.appendChild(el('span', { class: 'delta-sub' }, sub));
    return td;
  }
  var g = hasTarget ? PB.goodness(diff, direction) : 'flat';
  td.appendChild(el('span', { class: 'delta ' + g, 'data-goodness': g },
    diff !== 0 ? el('span', { class: 'arrow', 'aria-hidden': 'true' }, diff > 0 ? '▲' : '▼') : null,
    PB.deltaText(diff, unit === 'ratio' || unit === 's' ? unit : '')));
  var subText = [];
  if (unit !== 'ratio' && PB.isNum(ratio)) subText.push(PB.ratioText(ratio));
  if (sub) subText.push(sub);
  if (g === 'good' || g === 'bad') subText.push(g === 'good' ? 'better' : 'worse');
  if (subText.length) td.appendChild(el('span', { class: 'delta-sub' }, subText.join(' · ')));
  return td;
}

function noteItem(n, tz) {
  return el('li', { class: 'note', 'data-note-id': n.id },
    el('span', { class: 'note-text' }, n.text),
    el('span', { class: 'note-meta' }, '— ' + n.author + ', ' + PB.dateTimeText(n.created_at, tz)));
}

function noteForm(k) {
  var form = el('form', { class: 'note-form', 'data-kpi': k.kpi, hidden: true, novalidate: true });
  var author = el('input', { type: 'text', name: 'author', maxlength: 128, placeholder: 'Your name', 'aria-label': 'Author',
                             autocomplete: 'name', required: true });
  author.value = holder || rememberedAuthor();
  if (holder) { author.readOnly = true; author.title = 'Notes are written as the signed-in key\'s holder'; }
  var text = el('textarea', { name: 'text', rows: 3, maxlength: 4000, required: true, 'aria-label': 'Note on ' + (k.title || k.kpi),
                              placeholder: k.status === 'red' ? 'Why is it red, and what is being done?' : 'Note for the review' });
  var save = el('button', { type: 'submit', class: 'btn primary' }, 'Save note');
  var cancel = el('button', { type: 'button', class: 'btn' }, 'Cancel');
  var err = el('span', { class: 'form-error', role: 'alert' });
  PB.append(form, [author, text, el('div', { class: 'form-actions' }, save, cancel, err)]);
  cancel.addEventListener('click', function () { form.hidden = true; form.previousSibling && (form.previousSibling.hidden = false); });
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var a = author.value.trim(), t = text.value.trim();
    if (!a || !t) { err.textContent = !a ? 'Enter your name.' : 'Write the note first.'; return; }
    save.disabled = true;
    err.textContent = '';
    remember(a);
    PB.postJSON(api + '/commentary', holder ? { kpi: k.kpi, text: t } : { kpi: k.kpi, text: t, author: a }).then(function (resp) {
      save.disabled = false;
      if (resp.status === 201) { load(); return; }
      if (resp.status === 409) { err.textContent = 'The scorecard was published meanwhile; notes are locked.'; load(); return; }
      err.textContent = 'Not saved: ' + PB.problemText(resp);
    });
  });
  return form;
}

function explanations(k, c) {
  var mine = (c.breaches || []).filter(function (b) { return b.kpi === k.kpi; });
  if (!mine.length) return null;
  var ul = el('ul', { class: 'explanations' });
  mine.forEach(function (b) {
    var when = PB.dateTimeText(b.started_at, c.tz) + (b.ended_at ? ' – ' + PB.dateTimeText(b.ended_at, c.tz) : ' (ongoing)');
    var li = el('li', { class: 'explanation', 'data-explained': b.explained ? 'true' : 'false', 'data-day': b.day },
      el('a', { href: '/day/' + PB.enc(slug) + '/' + b.day + '#breach-' + b.id, class: 'breach-when' },
        '■ red ' + when + (b.source === 'live' ? ' · ' + b.window : ' · day')),
      el('span', { class: 'muted' }, ', worst ' + PB.valueText(b.worst_value, k.unit)));
    if (b.explained) {
      b.explanation.forEach(function (n) {
        li.appendChild(el('div', { class: 'owner-note' }, el('span', { class: 'note-text' }, n.text),
          el('span', { class: 'note-meta' }, ' — ' + n.author)));
      });
    } else {
      li.appendChild(el('div', { class: 'not-explained' }, 'NOT EXPLAINED'));
    }
    ul.appendChild(li);
  });
  return ul;
}

function commentaryCell(k, locked, tz, c) {
  var td = el('td', { class: 'commentary' });
  if (k.needs_note) {
    td.appendChild(el('div', { class: 'needs-note', title: 'A red KPI needs a note before the scorecard can be published' },
      el('span', { 'aria-hidden': 'true' }, '■ '), 'NOTE REQUIRED'));
  }
  if (k.commentary && k.commentary.length) {
    var ul = el('ul', { class: 'notes' });
    k.commentary.forEach(function (n) { ul.appendChild(noteItem(n, tz)); });
    td.appendChild(ul);
  } else if (!k.needs_note && locked) {
    td.appendChild(el('span', { class: 'muted no-notes' }, '—'));
  }
  var ex = explanations(k, c);
  if (ex) td.appendChild(ex);
  if (!locked) {
    var open = el('button', { type: 'button', class: 'btn add-note' + (k.needs_note ? ' primary' : ''), 'data-kpi': k.kpi }, '+ Add note');
    var form = noteForm(k);
    open.addEventListener('click', function () {
      open.hidden = true;
      form.hidden = false;
      var field = form.querySelector(form.querySelector('[name=author]').value ? 'textarea' : '[name=author]');
      field.focus();
    });
    td.appendChild(open);
    td.appendChild(form);
  }
  return td;
}

function streakCell(k) {
  var n = k.red_streak_months || 0;
  if (!n) return el('td', { class: 'num streak' }, el('span', { class: 'muted' }, '—'));
  return el('td', { class: 'num streak' + (n >= 3 ? ' long' : ''), 'data-raw': n },
    el('span', { class: 'streak-shape', 'aria-hidden': 'true' }, '■'.repeat(Math.min(n, 6))),
    el('span', { class: 'streak-n' }, n + (n === 1 ? ' month' : ' months')));
}

function renderRows(c) {
  var tbody = PB.clear(document.querySelector('#scorecard tbody'));
  var sparks = [];
  var history = c.kpis.map(function (k) { return k.trend.filter(function (t) { return PB.isNum(t.value); }).length; });
  var sameHistory = history.every(function (n) { return n === history[0]; });
  var noPrevious = c.kpis.every(function (k) { return !PB.isNum(k.previous_value); });
  var notes = [];
  if (noPrevious) notes.push('No ' + PB.monthLabel(PB.addMonths(c.month, -1)) + ' snapshot: no variance to last month.');
  if (sameHistory && history[0] < 12) {
    notes.push('Trends: ' + history[0] + ' of the last 12 months have a snapshot' + (history[0] ? '' : '') + '.');
  }
  $('history-note').textContent = notes.join(' ');
  $('history-note').hidden = !notes.length;
  c.kpis.forEach(function (k) {
    var hasTarget = PB.isNum(k.target);
    var key = PB.statusKey(k.status, hasTarget);
    var f = PB.formatValue(k.value, k.unit);
    var spark = el('div', { class: 'spark', 'data-kpi': k.kpi, role: 'img',
                            'aria-label': '12-month trend of ' + (k.title || k.kpi) });
    sparks.push({ node: spark, kpi: k });
    var prevSub = PB.isNum(k.previous_value) ? PB.shortMonth(PB.addMonths(c.month, -1)) + ': ' +
      PB.valueText(k.previous_value, k.unit) : '';
    var known = k.trend.filter(function (t) { return PB.isNum(t.value); }).length;
    var row = el('tr', { id: 'kpi-' + k.kpi, 'data-kpi': k.kpi, 'data-rank': k.agenda_rank, 'data-status': key,
                         class: 's-row-' + key + (k.needs_note ? ' row-needs-note' : '') },
      el('td', { class: 'num rank', title: k.agenda_why ? k.agenda_why.text : '' }, String(k.agenda_rank)),
      el('th', { scope: 'row' }, el('span', { class: 'kpi-title' }, k.title || k.kpi),
        el('span', { class: 'kpi-name' }, k.kpi + (k.weight && k.weight !== 1 ? ' · weight ' + k.weight : '')),
        k.agenda_why ? el('span', { class: 'agenda-why' }, k.agenda_why.text) : null,
        c.period ? el('a', { class: 'drill no-print', title: 'The raw events behind this number (CSV)',
          href: '/api/v1/kpis/' + PB.enc(k.kpi) + '/events?start=' + PB.enc(c.period.start) + '&end=' +
            PB.enc(c.period.end) + '&format=csv&limit=5000' }, 'events') : null),
      el('td', {}, PB.ownerNodes(k.owner)),
      el('td', { class: 'num value-cell', 'data-raw': PB.isNum(k.value) ? k.value : '' },
        el('span', { class: 'v' }, f.num), f.unit && f.num !== '—' ? el('span', { class: 'unit' }, f.unit) : null),
      el('td', { class: 'num target' }, PB.targetText(k.target, k.unit, k.direction) || el('span', { class: 'muted' }, '—')),
      el('td', { class: 'status' }, PB.badge(k.status, hasTarget)),
      varianceCell(k.variance_to_target, k.variance_to_target_ratio, k.unit, k.direction, hasTarget, 'var-target'),
      varianceCell(k.variance_to_previous, k.variance_to_previous_ratio, k.unit, k.direction, hasTarget, 'var-prev', prevSub),
      el('td', { class: 'trend' }, spark,
        known < 12 && !sameHistory ? el('span', { class: 'trend-note' }, known + (known === 1 ? ' month' : ' months') + ' of data') : null),
      streakCell(k),
      commentaryCell(k, !k.notes_allowed, c.tz, c));
    tbody.appendChild(row);
  });
  return sparks;
}

// ---------------------------------------------------------- sparklines
function drawSpark(item) {
  var k = item.kpi, scale = k.unit === 'ratio' ? 100 : 1;
  var x = k.trend.map(function (t) { return t.month; });
  var y = k.trend.map(function (t) { return PB.isNum(t.value) ? t.value * scale : null; });
  var colour = { red: PB.cssVar('--red', '#be123c'), amber: PB.cssVar('--amber', '#b45309'),
                 green: PB.cssVar('--green', '#15803d') }[k.status] || '#334155';
  var last = y.length - 1;
  var traces = [{
    type: 'scatter', mode: 'lines+markers', x: x, y: y, connectgaps: false, hoverinfo: 'skip',
    line: { color: '#475569', width: 1.6 },
    marker: { size: y.map(function (v, i) { return i === last ? 7 : 3.5; }),
              color: y.map(function (v, i) { return i === last ? colour : '#475569'; }),
              symbol: y.map(function (v, i) { return i === last ? ({ red: 'square', amber: 'triangle-up' }[k.status] || 'circle') : 'circle'; }) }
  }];
  var vals = y.filter(PB.isNum);
  if (PB.isNum(k.target)) {
    traces.push({ type: 'scatter', mode: 'lines', x: [x[0], x[last]], y: [k.target * scale, k.target * scale],
                  hoverinfo: 'skip', line: { color: '#94a3b8', width: 1, dash: 'dot' } });
    vals.push(k.target * scale);
  }
  var lo = Math.min.apply(null, vals.length ? vals : [0]), hi = Math.max.apply(null, vals.length ? vals : [1]);
  if (k.unit !== 'ratio') lo = Math.min(lo, 0);
  var pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.15 || 1;
  var layout = {
    width: 132, height: 38, margin: { l: 2, r: 6, t: 4, b: 4 }, showlegend: false,
    paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: 'rgba(0,0,0,0)',
    xaxis: { visible: false, type: 'category', range: [-0.5, last + 0.5] },
    yaxis: { visible: false, range: [lo - pad, hi + pad] }
  };
  var known = k.trend.filter(function (t) { return PB.isNum(t.value); }).length;
  item.node.setAttribute('title', known + ' of 12 months with data: ' + k.trend.map(function (t) {
    return PB.shortMonth(t.month) + ' ' + PB.valueText(t.value, k.unit);
  }).join(', '));
  return window.Plotly.newPlot(item.node, traces, layout, { staticPlot: true, displayModeBar: false });
}

function drawSparks(sparks, seq) {
  if (!window.Plotly) { setState('sparklines', 'error'); return; }
  Promise.all(sparks.map(drawSpark)).then(function () {
    if (seq === renderSeq) setState('sparklines', 'ready');
  }, function () { setState('sparklines', 'error'); });
}

// ------------------------------------------------------------- publish
function missingFromErrors(resp) {
  var errs = (resp.body && resp.body.errors) || [];
  return errs.map(function (e) {
    var m = /^(\S+) is red/.exec(e.message || '');
    return { kpi: m ? m[1] : null, message: e.message || '' };
  });
}

function showPublishErrors(resp) {
  var box = $('publish-errors');
  var missing = missingFromErrors(resp);
  box.hidden = false;
  var detail = resp.body && resp.body.detail ? String(resp.body.detail) : 'The scorecard could not be published';
  $('publish-errors-text').textContent = (detail.charAt(0).toUpperCase() + detail.slice(1)) +
    (missing.length ? ' — ' + missing.length + ' KPI' + (missing.length === 1 ? '' : 's') + ' still need' + (missing.length === 1 ? 's' : '') + ' a note:' : '.');
  var ul = PB.clear($('publish-missing'));
  var byName = {};
  (card ? card.kpis : []).forEach(function (k) { byName[k.kpi] = k; });
  missing.forEach(function (m) {
    var k = m.kpi && byName[m.kpi];
    var li = el('li', { 'data-kpi': m.kpi || '' });
    if (k) {
      li.appendChild(el('a', { href: '#kpi-' + k.kpi }, k.title || k.kpi));
      li.appendChild(el('span', { class: 'muted' }, ' (' + k.kpi + ') — ALERT ' +
        PB.valueText(k.value, k.unit) + ' against ' + PB.targetText(k.target, k.unit, k.direction) + ', no note'));
      var row = document.getElementById('kpi-' + k.kpi);
      if (row) row.classList.add('flagged');
    } else {
      li.textContent = m.message;
    }
    ul.appendChild(li);
  });
  box.scrollIntoView({ block: 'nearest' });
}

function wirePublish() {
  var form = $('publish-form'), open = $('publish-open'), by = $('publish-by'), err = $('publish-error');
  open.addEventListener('click', function () {
    open.hidden = true; form.hidden = false;
    by.value = by.value || rememberedAuthor();
    by.focus();
  });
  $('publish-cancel').addEventListener('click', function () { form.hidden = true; open.hidden = false; err.textContent = ''; });
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var name = by.value.trim();
    if (!name) { err.textContent = 'Enter your name.'; by.focus(); return; }
    remember(name);
    err.textContent = '';
    $('publish-confirm').disabled = true;
    PB.postJSON(api + '/publish', holder ? {} : { by: name }).then(function (resp) {
      $('publish-confirm').disabled = false;
      if (resp.ok && resp.body) {
        form.hidden = true; open.hidden = false;
        render(resp.body);
        return;
      }
      if (resp.status === 422) { showPublishErrors(resp); return; }
      if (resp.status === 409) { err.textContent = 'Already published.'; load(); return; }
      err.textContent = 'Not published: ' + PB.problemText(resp);
    });
  });
  $('print-btn').addEventListener('click', function () { window.print(); });
}

// -------------------------------------------------------------- states
function render(c) {
  card = c;
  renderSeq += 1;
  setState('sparklines', 'pending');
  document.body.className = 'ready' + (c.snapshot.status === 'restated' ? ' restated' : '') + (c.published ? ' published' : '');
  $('content').hidden = false;
  $('csv-link').hidden = false;
  $('csv-link').href = api + '/export.csv';
  renderMeta(c);
  renderBanners(c);
  if (!$('publish-errors').hidden && !c.published) {
    // after a note was added, keep the list of still-missing notes current
    var still = c.kpis.filter(function (k) { return k.needs_note; });
    if (!still.length) $('publish-errors').hidden = true;
    else showPublishErrors({ body: { detail: 'every red KPI needs a note before publishing', errors: still.map(function (k) {
      return { message: k.kpi + ' is red and has no note' }; }) } });
  }
  var sparks = renderRows(c);
  $('provenance').textContent = 'Monthly snapshot v' + c.snapshot.version + ' cut ' + PB.dateTimeText(c.snapshot.cut_at, c.tz) +
    ' · printed ' + PB.dateTimeText(new Date().toISOString(), c.tz);
  setState('state', 'ready');
  drawSparks(sparks, renderSeq);
}

function notCut(resp) {
  document.body.className = 'not-cut';
  setState('state', 'not-cut');
  $('not-cut').hidden = false;
  var detail = PB.problemText(resp);
  if (!/no snapshot yet/.test(detail)) $('not-cut-title').textContent = 'NO SCORECARD';
  $('not-cut-text').textContent = /no snapshot yet/.test(detail)
    ? 'The monthly snapshot of ' + PB.monthLabel(month) + ' has not been cut yet. A month is cut shortly after it ' +
      'closes (by default at 00:15 on the 1st of the next month, business time); its scorecard appears then.'
    : 'There is no scorecard for ' + month + '.';
  $('not-cut-detail').textContent = detail;
  $('meta').appendChild(chip('Snapshot', $('not-cut-title').textContent, 'warn', { id: 'status-chip', 'data-status': 'not-cut' }));
}

function fail(message) {
  document.body.className = 'error';
  setState('state', 'error');
  $('error').hidden = false;
  $('error-text').textContent = message;
}

function load() {
  return PB.getJSON(api).then(function (resp) {
    if (resp.status === 404) { notCut(resp); return; }
    if (!resp.ok || !resp.body) { fail(PB.problemText(resp)); return; }
    render(resp.body);
  });
}

function main() {
  renderNav();
  wirePublish();
  PB.getJSON('/api/v1/dashboards').then(function (r) {
    var dash = (r.ok && r.body ? r.body : []).filter(function (d) { return d.slug === slug; })[0];
    dashTitle = dash ? dash.title : slug;
    $('title').textContent = dashTitle;
  });
  PB.getJSON('/api/v1/session').then(function (r) {
    holder = r.ok && r.body ? r.body.holder || null : null;
    if (holder) { $('publish-by').value = holder; $('publish-by').readOnly = true; }
  }).then(load).catch(function (err) { fail(String(err && err.message || err)); });
}

setState('state', 'loading');
PB.onReady(main);
