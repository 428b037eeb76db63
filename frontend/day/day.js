/* Pulseboard end-of-day page: /day/{slug}/{YYYY-MM-DD}[?version=n]
 *
 * Reads the day's snapshot (GET /api/v1/snapshots/{slug}/day/{date}), its versions,
 * the on-demand reconciliation, and hourly / per-queue series of the KPIs
 * (GET /api/v1/kpis/{name}/series) for the charts (Plotly) and the breakdown.
 *
 * The end-of-day view (GET /api/v1/days/{slug}/{date}) gives the sign-off, the breaches with their
 * owners and explanations (POST .../commentary writes one), and once signed off the pinned version,
 * which is shown unless ?version= asks for another; POST .../signoff signs the day off.
 *
 * Test hooks: body[data-state] = loading | ready | not-cut | error; body[data-breaches] = ready;
 * breach rows tr.breach[data-kpi][data-explained]; forms form.explain-form; KPI rows a.drill;
 * body[data-charts|data-breakdown|data-recon] = ready | none | error once each part is done;
 * KPI rows tr[data-kpi] with .value-cell[data-raw]; breakdown rows tr[data-dim-value].
 */
import * as PB from '../common/common.js';

const el = PB.el, $ = PB.$;

// Breakdowns by a dimension, per pack: the values to ask for (rows with no volume are hidden).
var BREAKDOWNS = {
  'contact-centre': {
    dim: 'queue', plural: 'queues', label: 'Queue', title: 'By queue',
    values: ['PS', 'NW', 'IN', 'NE', 'TT', 'PE'],
    names: { PS: 'Regular', PE: 'Regular (English)', IN: 'Internet support', NE: 'Stock exchange',
             NW: 'Prospective customers', TT: 'Call-back on hold' }
  },
  itsm: {
    dim: 'priority', plural: 'priorities', label: 'Priority', title: 'By priority',
    values: ['1 - Critical', '2 - High', '3 - Moderate', '4 - Low'], names: {}
  }
};

var parts = PB.pathParts();            // ['day', slug, date]
var slug = parts[1] || '', day = parts[2] || '';
var params = new URLSearchParams(location.search);
var wantVersion = /^\d+$/.test(params.get('version') || '') ? Number(params.get('version')) : null;
var api = '/api/v1/snapshots/' + PB.enc(slug) + '/day/' + PB.enc(day);
var dayApi = '/api/v1/days/' + PB.enc(slug) + '/' + PB.enc(day);

function setState(name, value) { document.body.setAttribute('data-' + name, value); }

// ------------------------------------------------------------ header
function renderNav() {
  var valid = PB.validDay(day);
  $('day-label').textContent = valid ? PB.dayLabel(day) : day;
  document.title = 'End of day · ' + day + ' · Pulseboard';
  if (!valid) {
    ['prev-day', 'next-day', 'month-link'].forEach(function (id) { $(id).hidden = true; });
  } else {
    $('prev-day').href = '/day/' + PB.enc(slug) + '/' + PB.addDays(day, -1);
    $('next-day').href = '/day/' + PB.enc(slug) + '/' + PB.addDays(day, 1);
    $('month-link').href = '/scorecard/' + PB.enc(slug) + '/' + day.slice(0, 7);
    $('month-link').textContent = PB.monthLabel(day.slice(0, 7)) + ' scorecard';
  }
}

function chip(key, value, cls, attrs) {
  var a = Object.assign({ class: 'chip' + (cls ? ' ' + cls : '') }, attrs || {});
  return el('span', a, el('span', { class: 'k' }, key), el('span', { class: 'v' }, value));
}

function renderMeta(snap) {
  var meta = PB.clear($('meta'));
  var restated = snap.status === 'restated';
  meta.appendChild(chip('Snapshot', 'v' + snap.version + ' · ' + (restated ? 'RESTATED' : 'FINAL'),
    restated ? 'restated' : 'ok', { id: 'status-chip', 'data-status': snap.status }));
  meta.appendChild(chip('Cut', PB.dateTimeText(snap.cut_at, snap.tz)));
  if (snap.scheduled_for && snap.scheduled_for !== snap.cut_at) {
    meta.appendChild(chip('Scheduled', PB.dateTimeText(snap.scheduled_for, snap.tz)));
  }
  meta.appendChild(chip('Late events', PB.grouped(snap.late_events || 0), snap.late_events ? 'warn' : '',
    { id: 'late-chip' }));
  meta.appendChild(chip('Reconciliation', 'checking…', '', { id: 'recon-chip' }));
  $('tz').textContent = snap.tz;
}

function renderVersions(snap) {
  PB.getJSON(api + '/versions').then(function (resp) {
    if (!resp.ok || !resp.body) return;
    var list = resp.body.versions || [];
    var latest = list.length ? list[list.length - 1] : null;
    var box = PB.clear($('versions'));
    list.forEach(function (v, i) {
      var label = 'v' + v.version + ' ' + (v.status === 'restated' ? 'restated' : 'final') +
        ' (cut ' + PB.dateTimeText(v.cut_at, v.tz) + ')';
      var node = v.version === snap.version
        ? el('strong', { class: 'version current', 'data-version': v.version }, label)
        : el('a', { class: 'version', 'data-version': v.version,
                    href: '/day/' + PB.enc(slug) + '/' + day + (latest && v.version === latest.version ? '' : '?version=' + v.version) },
             label);
      if (i) box.appendChild(document.createTextNode(' · '));
      box.appendChild(node);
      if (v.cause) box.appendChild(el('span', { class: 'muted' }, ' — ' + v.cause));
    });
    if (latest && latest.version !== snap.version) {
      $('old-version').hidden = false;
      $('old-version-text').textContent = 'This is version ' + snap.version + ' of ' + list.length +
        '. The latest is version ' + latest.version + ' (' + latest.status + (latest.cause ? ': ' + latest.cause : '') + ').';
      $('restated').hidden = false;
      if (snap.status !== 'restated') {
        $('restated-text').textContent = 'This day was restated after this version was cut.';
      }
    }
  });
}

function renderRestated(snap) {
  if (snap.status === 'restated') {
    $('restated').hidden = false;
    $('restated-text').textContent = 'Version ' + snap.version + ' replaces earlier numbers. Cause: ' +
      (snap.cause || 'not recorded') + '.' +
      (snap.late_events ? ' ' + PB.grouped(snap.late_events) + ' events of this day arrived after the first cut.' : '');
  }
  renderVersions(snap);
}

// -------------------------------------------------------------- KPIs
function changeCell(name, kpi, changes) {
  var c = changes && changes[name];
  if (!c) return el('td', { class: 'num change-col muted' }, 'unchanged');
  var from = PB.valueText(c.from, kpi.unit), to = PB.valueText(c.to, kpi.unit);
  return el('td', { class: 'num change-col changed', 'data-difference': c.difference },
    el('span', { class: 'from-to' }, from + ' → ' + to),
    el('span', { class: 'delta-sub ' + PB.goodness(c.difference, kpi.direction) },
      PB.deltaText(c.difference, kpi.unit === 'ratio' || kpi.unit === 's' ? kpi.unit : '') +
      (c.definition_changed ? ' · definition changed' : '')));
}

function renderKpis(snap, meta) {
  var tbody = PB.clear(document.querySelector('#kpis tbody'));
  var showChange = !!snap.changes;
  document.querySelectorAll('#kpis .change-col').forEach(function (n) { n.hidden = !showChange; });
  var counts = { red: 0, amber: 0, green: 0 };
  Object.keys(snap.kpis).forEach(function (name) {
    var k = snap.kpis[name];
    var hasTarget = PB.isNum(k.target);
    var key = PB.statusKey(k.status, hasTarget);
    if (counts[key] !== undefined) counts[key] += 1;
    var f = PB.formatValue(k.value, k.unit);
    var changed = snap.changes && snap.changes[name];
    var row = el('tr', { 'data-kpi': name, 'data-status': key, class: 's-row-' + key },
      el('th', { scope: 'row' }, el('span', { class: 'kpi-title' }, k.title || name),
        changed ? el('span', { class: 'restated-tag', title: 'changed in this version' }, '⟲ restated') : null,
        el('span', { class: 'kpi-name' }, name),
        el('a', { class: 'drill no-print', href: drillUrl(name, snap), title: 'The raw events behind this number (CSV)' }, 'events')),
      el('td', { class: 'num value-cell', 'data-raw': PB.isNum(k.value) ? k.value : '' },
        el('span', { class: 'v' }, f.num), f.unit && f.num !== '—' ? el('span', { class: 'unit' }, f.unit) : null),
      el('td', { class: 'num target' }, PB.targetText(k.target, k.unit, k.direction) || el('span', { class: 'muted' }, '—')),
      el('td', { class: 'status' }, PB.badge(k.status, hasTarget)),
      el('td', {}, PB.ownerNodes(k.owner)),
      el('td', { class: 'definition' }, (meta[name] && meta[name].description) || ''),
      showChange ? changeCell(name, k, snap.changes) : null);
    tbody.appendChild(row);
  });
  $('status-summary').textContent = counts.red + ' alert · ' + counts.amber + ' watch · ' + counts.green + ' ok';
}

function drillUrl(name, snap) {
  return '/api/v1/kpis/' + PB.enc(name) + '/events?start=' + PB.enc(snap.period.start) + '&end=' +
    PB.enc(snap.period.end) + '&format=csv&limit=5000';
}

// ---------------------------------------------------------- breaches
function timeOf(iso, tz) { return iso ? PB.dateTimeText(iso, tz) : 'ongoing'; }

function explainForm(kpi, reload) {
  var form = el('form', { class: 'explain-form no-print', 'data-kpi': kpi, novalidate: true });
  var text = el('textarea', { name: 'text', rows: 2, maxlength: 4000, required: true, 'aria-label': 'Explanation of ' + kpi,
                              placeholder: 'What happened, and what is being done?' });
  var save = el('button', { type: 'submit', class: 'btn primary' }, 'Save explanation');
  var err = el('span', { class: 'form-error', role: 'alert' });
  PB.append(form, [text, el('div', { class: 'form-actions' }, save, err)]);
  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var t = text.value.trim();
    if (!t) { err.textContent = 'Write the explanation first.'; return; }
    save.disabled = true;
    PB.postJSON(dayApi + '/commentary', { kpi: kpi, text: t }).then(function (resp) {
      save.disabled = false;
      if (resp.status === 201) { reload(); return; }
      err.textContent = 'Not saved: ' + PB.problemText(resp);
    });
  });
  return form;
}

function renderBreaches(view, reload) {
  var tbody = PB.clear(document.querySelector('#breach-table tbody'));
  var tz = view.tz;
  var allowed = {};
  (view.notes_allowed || []).forEach(function (k) { allowed[k] = true; });
  var shownForm = {};
  view.breaches.forEach(function (b) {
    var notes = b.explanation || [];
    var cell = el('td', { class: 'explanation' });
    if (notes.length) {
      var ul = el('ul', { class: 'notes' });
      notes.forEach(function (n) {
        ul.appendChild(el('li', { class: 'note' }, el('span', { class: 'note-text' }, n.text),
          el('span', { class: 'note-meta' }, '— ' + n.author + ', ' + PB.dateTimeText(n.created_at, tz))));
      });
      cell.appendChild(ul);
    } else {
      cell.appendChild(el('div', { class: 'not-explained' }, el('span', { 'aria-hidden': 'true' }, '■ '), 'EXPLANATION REQUIRED'));
      if (allowed[b.kpi] && !shownForm[b.kpi]) { cell.appendChild(explainForm(b.kpi, reload)); shownForm[b.kpi] = true; }
    }
    var where = b.source === 'live' ? 'live tile ' + b.tile + ' (' + b.window + ')' : 'day snapshot';
    tbody.appendChild(el('tr', { class: 'breach', 'data-kpi': b.kpi, 'data-explained': b.explained ? 'true' : 'false',
                                 id: 'breach-' + b.id },
      el('th', { scope: 'row' }, b.kpi),
      el('td', {}, PB.ownerNodes(b.owner)),
      el('td', {}, where),
      el('td', {}, timeOf(b.started_at, tz) + ' – ' + timeOf(b.ended_at, tz)),
      el('td', { class: 'num' }, PB.valueText(b.worst_value, (view.snapshot && view.snapshot.kpis[b.kpi] || {}).unit)),
      el('td', { class: 'num' }, PB.isNum(b.target) ? String(b.target) : '—'),
      cell));
  });
  if (!view.breaches.length) {
    tbody.appendChild(el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'No breach recorded this day.')));
  }
  var signed = view.signed_off;
  $('signed-off').hidden = !signed;
  if (signed) {
    $('signed-off-text').textContent = 'Signed off by ' + signed.by + ' on ' + PB.dateTimeText(signed.at, tz) +
      ' (snapshot version ' + signed.snapshot_version + ', sign-off ' + signed.number + '). These numbers stay as signed off.';
  }
  var after = view.restated_after_publication;
  $('restated-after').hidden = !after;
  if (after) {
    $('restated-after-text').textContent = 'Restated after sign-off as version ' + after.version + ': ' +
      (after.cause || 'recomputed') + '. What changed: ' + after.moved.map(function (k) {
        var c = after.changes[k], unit = (view.snapshot && view.snapshot.kpis[k] || {}).unit;
        return k + ' ' + PB.valueText(c.from, unit) + ' → ' + PB.valueText(c.to, unit);
      }).join('; ') + '. Owners may explain what moved; signing off again pins version ' + after.version + '.';
  }
  $('signoff-btn').hidden = !!signed && !after;
  setState('breaches', 'ready');
}

function wireSignoff(reload) {
  $('signoff-btn').addEventListener('click', function () {
    $('signoff-error').hidden = true;
    PB.postJSON(dayApi + '/signoff', {}).then(function (resp) {
      if (resp.ok) { location.reload(); return; }
      $('signoff-error').hidden = false;
      var errs = (resp.body && resp.body.errors) || [];
      $('signoff-error').textContent = 'Not signed off: ' + PB.problemText(resp) +
        (errs.length ? ' — ' + errs.map(function (e) { return e.message; }).join('; ') : '');
    });
  });
}

// ---------------------------------------------------- reconciliation
function checkItem(c) {
  var cls = c.ok === true ? 'ok' : c.ok === false ? 'failed' : 'skipped';
  var word = c.ok === true ? '● OK' : c.ok === false ? '■ FAILED' : '○ SKIPPED';
  return el('li', { class: 'check ' + cls, 'data-check': c.name },
    el('span', { class: 'check-state' }, word), ' ',
    el('span', { class: 'check-name' }, c.name.replace(/_/g, ' ')), ' ',
    el('span', { class: 'muted' }, c.detail || ''));
}

function renderRecon(snap) {
  var stored = snap.reconciliation;
  var list = PB.clear($('recon-stored'));
  if (stored && stored.checks) stored.checks.forEach(function (c) { list.appendChild(checkItem(c)); });
  else list.appendChild(el('li', { class: 'muted' }, 'No checks were stored with this version.'));
  $('recon-stored-when').textContent = '(' + PB.dateTimeText(snap.cut_at, snap.tz) + ')';

  return PB.getJSON('/api/v1/reconciliation/' + PB.enc(slug) + '/day/' + PB.enc(day)).then(function (resp) {
    var now = resp.ok ? resp.body : null;
    var nowList = PB.clear($('recon-now'));
    if (now && now.checks) now.checks.forEach(function (c) { nowList.appendChild(checkItem(c)); });
    else nowList.appendChild(el('li', { class: 'form-error' }, 'Check failed to run: ' + PB.problemText(resp)));
    var mismatches = [].concat((stored && stored.mismatches) || [], (now && now.mismatches) || []);
    var ok = (!stored || stored.ok !== false) && (!!now && now.ok !== false);
    var tbody = PB.clear(document.querySelector('#mismatches tbody'));
    mismatches.forEach(function (m) {
      var unit = snap.kpis[m.kpi] ? snap.kpis[m.kpi].unit : '';
      tbody.appendChild(el('tr', { 'data-kpi': m.kpi },
        el('td', {}, (snap.kpis[m.kpi] && snap.kpis[m.kpi].title) || m.kpi),
        el('td', {}, m.where || ''),
        el('td', { class: 'num' }, PB.valueText(m.expected, unit)),
        el('td', { class: 'num' }, PB.valueText(m.found, unit)),
        el('td', { class: 'num' }, PB.isNum(m.found) && PB.isNum(m.expected)
          ? PB.deltaText(m.found - m.expected, unit === 'ratio' || unit === 's' ? unit : '') : '—'),
        el('td', {}, m.cause || '')));
    });
    $('mismatches').hidden = mismatches.length === 0;
    var badgeBox = PB.clear($('recon-badge'));
    badgeBox.appendChild(el('span', { class: 'badge ' + (ok ? 's-green' : 's-red'), id: 'recon-state',
                                      'data-ok': ok ? 'true' : 'false' },
      el('span', { class: 'shape', 'aria-hidden': 'true' }, ok ? '●' : '■'), ok ? 'RECONCILED' : 'FAILED'));
    var chipNode = $('recon-chip');
    chipNode.className = 'chip ' + (ok ? 'ok' : 'bad');
    chipNode.querySelector('.v').textContent = ok ? '● OK' : '■ FAILED (' + mismatches.length + ')';
    if (!ok) {
      $('recon-failed').hidden = false;
      var causes = {};
      mismatches.forEach(function (m) { if (m.cause) causes[m.cause] = true; });
      $('recon-failed-text').textContent = mismatches.length + ' mismatch' + (mismatches.length === 1 ? '' : 'es') +
        (Object.keys(causes).length ? ' — ' + Object.keys(causes).join('; ') : '') + '. See Reconciliation below.';
    }
    setState('recon', 'ready');
  });
}

// ------------------------------------------------------------ charts
var seriesPack = null;  // the dashboard's pack: a KPI name two packs define is refused without it

function seriesUrl(name, grain, start, end, dims, tz) {
  var q = '?grain=' + grain + '&start=' + PB.enc(start) + '&end=' + PB.enc(end);
  if (seriesPack) q += '&pack=' + PB.enc(seriesPack);
  if (tz) q += '&tz=' + PB.enc(tz);   // periods in the dashboard's zone, whatever the server's
  Object.keys(dims || {}).forEach(function (k) { q += '&dims.' + PB.enc(k) + '=' + PB.enc(dims[k]); });
  return '/api/v1/kpis/' + PB.enc(name) + '/series' + q;
}

function fetchSeries(name, grain, snap, dims) {
  return PB.getJSON(seriesUrl(name, grain, snap.period.start, snap.period.end, dims, snap.tz)).then(function (resp) {
    if (!resp.ok || !resp.body) throw new Error(name + ': ' + PB.problemText(resp));
    return resp.body.points || [];
  });
}

/** Which KPIs to chart and tabulate: counts, the heaviest-weighted ratio(s) and time KPI, by the pack's metadata. */
function pickKpis(snap, meta) {
  var names = Object.keys(snap.kpis);
  var info = function (n) { return meta[n] || { gauge: false, weight: snap.kpis[n].weight || 1 }; };
  var live = names.filter(function (n) { return !info(n).gauge; });
  var byWeight = function (a, b) { return (info(b).weight || 1) - (info(a).weight || 1); };
  var counts = live.filter(function (n) { var u = snap.kpis[n].unit; return u !== 'ratio' && u !== 's'; }).slice(0, 3);
  var ratios = live.filter(function (n) { return snap.kpis[n].unit === 'ratio' && PB.isNum(snap.kpis[n].target); }).sort(byWeight);
  var times = live.filter(function (n) { return snap.kpis[n].unit === 's' && PB.isNum(snap.kpis[n].target); }).sort(byWeight);
  return { counts: counts, ratios: ratios.slice(0, 2), times: times.slice(0, 1) };
}

/** "07:00" per point, in the dashboard's zone (the series API answers in the server's zone). */
function hourLabels(points, tz) {
  var seen = {};
  var f;
  try { f = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZone: tz }); }
  catch (e) { f = null; }
  return points.map(function (p) {
    var label = f ? f.format(new Date(p.start)) : String(p.start).slice(11, 16);
    while (seen[label]) label += '′';   // a repeated hour (DST ends)
    seen[label] = true;
    return label;
  });
}

var FONT = { family: 'Liberation Sans, DejaVu Sans, Arial, sans-serif', size: 12, color: '#334155' };
var CONFIG = { displayModeBar: false, responsive: true };

// Sized by the stylesheet (the .plot boxes), so screen and print each get their own size.
function baseLayout(yaxis) {
  return {
    autosize: true, margin: { l: 56, r: 16, t: 8, b: 36 }, font: FONT,
    paper_bgcolor: 'rgba(0,0,0,0)', plot_bgcolor: 'rgba(0,0,0,0)',
    legend: { orientation: 'h', x: 0, y: 1.12, font: { size: 12 } },
    xaxis: { type: 'category', tickangle: 0, gridcolor: '#eef1f5', linecolor: '#cbd5e1', nticks: 13 },
    yaxis: Object.assign({ gridcolor: '#e2e8f0', zeroline: true, zerolinecolor: '#cbd5e1', rangemode: 'tozero' }, yaxis),
    bargap: 0.18, bargroupgap: 0.06, hovermode: 'x unified'
  };
}

function plot(id, traces, layout) {
  return window.Plotly.newPlot($(id), traces, layout, CONFIG);
}

function volumeChart(snap, names, series, labels) {
  var colours = [PB.cssVar('--chart-offered', '#94a3b8'), PB.cssVar('--chart-answered', '#2563eb'),
                 PB.cssVar('--chart-abandoned', '#be123c')];
  var traces = names.map(function (n, i) {
    var k = snap.kpis[n];
    var y = series[n].map(function (p) { return p.value; });
    var base = { x: labels, y: y, name: PB.plotText(k.title || n), customdata: y.map(function (v) { return PB.valueText(v, k.unit); }),
                 hovertemplate: '%{customdata}<extra>' + PB.plotText(k.title || n) + '</extra>' };
    if (i < 2) return Object.assign(base, { type: 'bar', marker: { color: colours[i] } });
    return Object.assign(base, { type: 'scatter', mode: 'lines+markers', line: { color: colours[2], width: 2.5 },
                                 marker: { size: 5, color: colours[2] } });
  });
  var unit = snap.kpis[names[0]].unit;
  $('chart-volume-title').textContent = names.map(function (n) { return snap.kpis[n].title || n; }).join(' vs ') + ' per hour';
  return plot('chart-volume', traces, baseLayout({ title: { text: PB.plotText(unit || ''), font: { size: 11 } } }));
}

function lineWithTarget(id, titleId, snap, name, points, labels) {
  var k = snap.kpis[name];
  var ratio = k.unit === 'ratio';
  var y = points.map(function (p) { return p.value; });
  var axis = ratio ? { scale: 0.01, label: '' } : PB.timeAxis(PB.isNum(k.target) ? k.target : k.value);
  var scale = 1 / axis.scale;
  var ys = y.map(function (v) { return PB.isNum(v) ? v * scale : null; });
  var colour = PB.cssVar('--chart-line', '#0f766e');
  var traces = [{
    type: 'scatter', mode: 'lines+markers', x: labels, y: ys, name: PB.plotText(k.title || name), connectgaps: false,
    line: { color: colour, width: 2.5 }, marker: { size: 6, color: colour },
    customdata: y.map(function (v) { return PB.valueText(v, k.unit); }),
    hovertemplate: '%{customdata}<extra>' + PB.plotText(k.title || name) + '</extra>'
  }];
  if (PB.isNum(k.target)) {
    traces.push({
      type: 'scatter', mode: 'lines', x: labels, y: labels.map(function () { return k.target * scale; }),
      name: PB.plotText('Target ' + PB.targetText(k.target, k.unit, k.direction)),
      line: { color: PB.cssVar('--chart-target', '#475569'), width: 2, dash: 'dash' }, hoverinfo: 'skip'
    });
  }
  var yaxis = ratio ? { range: [0, 102], ticksuffix: ' %', rangemode: 'normal' }
    : { title: { text: axis.label, font: { size: 11 } } };
  $(titleId).textContent = (k.title || name) + ' per hour';
  return plot(id, traces, baseLayout(yaxis));
}

function renderCharts(snap, picks) {
  var wanted = picks.counts.concat(picks.ratios.slice(0, 1), picks.times);
  if (!wanted.length || !window.Plotly) {
    $('charts-card').hidden = true;
    setState('charts', window.Plotly ? 'none' : 'error');
    return Promise.resolve();
  }
  $('charts-hint').textContent = 'Local hours, ' + snap.tz + ' · live recomputation from the stored rollups';
  var series = {};
  return Promise.all(wanted.map(function (n) {
    return fetchSeries(n, 'hour', snap).then(function (pts) { series[n] = pts; });
  })).then(function () {
    var labels = hourLabels(series[wanted[0]], snap.tz);
    var jobs = [];
    if (picks.counts.length) jobs.push(volumeChart(snap, picks.counts, series, labels));
    else $('chart-volume').parentNode.hidden = true;
    if (picks.ratios.length) jobs.push(lineWithTarget('chart-rate', 'chart-rate-title', snap, picks.ratios[0], series[picks.ratios[0]], labels));
    else $('chart-rate').parentNode.hidden = true;
    if (picks.times.length) jobs.push(lineWithTarget('chart-time', 'chart-time-title', snap, picks.times[0], series[picks.times[0]], labels));
    else $('chart-time').parentNode.hidden = true;
    return Promise.all(jobs);
  }).then(function () { setState('charts', 'ready'); }, function (err) {
    $('charts-error').hidden = false;
    $('charts-error').textContent = 'Charts unavailable: ' + err.message;
    setState('charts', 'error');
  });
}

// --------------------------------------------------------- breakdown
function localStatus(name, value, snap, meta) {
  var k = snap.kpis[name], band = (meta[name] && meta[name].amber_band) || 0;
  if (!PB.isNum(value) || !PB.isNum(k.target)) return null;
  if (k.direction === 'lower') return value <= k.target ? 'green' : value <= k.target + band ? 'amber' : 'red';
  return value >= k.target ? 'green' : value >= k.target - band ? 'amber' : 'red';
}

function valueWithShape(name, value, text, status) {
  var cell = el('td', { class: 'num', 'data-kpi': name, 'data-raw': PB.isNum(value) ? value : '' });
  if (status) {
    var st = PB.STATUS[status];
    cell.appendChild(el('span', { class: 'mini s-' + status, title: st.word + ' — ' + st.label, 'aria-label': st.word }, st.shape));
    cell.appendChild(document.createTextNode(' '));
  }
  cell.appendChild(el('span', { class: 'v' }, text));
  return cell;
}

function renderBreakdown(snap, pack, picks, meta) {
  var conf = BREAKDOWNS[pack];
  var cols = picks.counts.concat(picks.ratios, picks.times);
  if (!conf || !cols.length) { setState('breakdown', 'none'); return Promise.resolve(); }
  $('breakdown-card').hidden = false;
  $('breakdown-title').textContent = conf.title;
  $('breakdown-hint').textContent = 'Each ' + conf.dim + ' with volume this day, recomputed now from the stored events; ' +
    'the last row is the snapshot. Shapes mark the day target (● ▲ ■)';
  var head = PB.clear(document.querySelector('#breakdown thead tr'));
  head.appendChild(el('th', { scope: 'col' }, conf.label));
  cols.forEach(function (n) { head.appendChild(el('th', { scope: 'col', class: 'num' }, snap.kpis[n].title || n)); });

  var values = {};
  var jobs = [];
  var misaligned = 0;   // the series API cuts days in the server's zone; another zone's day spans two
  conf.values.forEach(function (v) {
    values[v] = {};
    cols.forEach(function (n) {
      var dims = {}; dims[conf.dim] = v;
      jobs.push(fetchSeries(n, 'day', snap, dims).then(function (pts) {
        if (pts.length !== 1) misaligned = pts.length;
        values[v][n] = pts.length === 1 ? pts[0].value : null;
      }));
    });
  });
  function fmt(name, value) {   // counts without their unit word: the column header names them
    var unit = snap.kpis[name].unit;
    var f = PB.formatValue(value, unit);
    return f.num === '—' || (unit !== 'ratio' && unit !== 's') ? f.num : f.num + ' ' + f.unit;
  }
  return Promise.all(jobs).then(function () {
    if (misaligned) throw new Error('the series API answered ' + misaligned + ' server-zone days for this ' + snap.tz + ' day');
    var tbody = PB.clear(document.querySelector('#breakdown tbody'));
    var first = cols[0];
    var shown = conf.values.filter(function (v) {
      return picks.counts.some(function (n) { return (values[v][n] || 0) > 0; });
    }).sort(function (a, b) { return (values[b][first] || 0) - (values[a][first] || 0); });
    shown.forEach(function (v) {
      var row = el('tr', { 'data-dim-value': v },
        el('th', { scope: 'row' }, el('span', { class: 'dim-code' }, v),
          conf.names[v] ? el('span', { class: 'dim-name' }, conf.names[v]) : null));
      cols.forEach(function (n) {
        row.appendChild(valueWithShape(n, values[v][n], fmt(n, values[v][n]), localStatus(n, values[v][n], snap, meta)));
      });
      tbody.appendChild(row);
    });
    if (!shown.length) {
      tbody.appendChild(el('tr', {}, el('td', { colspan: cols.length + 1, class: 'muted' }, 'No volume in any ' + conf.dim + ' this day.')));
    }
    var foot = PB.clear(document.querySelector('#breakdown tfoot'));
    var total = el('tr', { class: 'total' }, el('th', { scope: 'row' }, 'All ' + conf.plural + ' (snapshot v' + snap.version + ')'));
    cols.forEach(function (n) {
      var k = snap.kpis[n];
      total.appendChild(valueWithShape(n, k.value, fmt(n, k.value), PB.isNum(k.target) ? k.status : null));
    });
    foot.appendChild(total);
    setState('breakdown', 'ready');
  }, function (err) {
    $('breakdown').hidden = true;
    $('breakdown-hint').textContent = 'Breakdown unavailable: ' + err.message;
    setState('breakdown', 'error');
  });
}

// -------------------------------------------------------------- states
function notCut(resp) {
  document.body.className = 'not-cut';
  setState('state', 'not-cut');
  $('not-cut').hidden = false;
  $('title').textContent = dashTitle || slug;
  var what = PB.validDay(day) ? PB.dayLabel(day) : day;
  var detail = PB.problemText(resp);
  if (wantVersion !== null && /has not been cut/.test(detail)) {
    $('not-cut-text').textContent = 'Version ' + wantVersion + ' of ' + what + ' does not exist.';
  } else if (/has not been cut/.test(detail)) {
    $('not-cut-text').textContent = 'The end-of-day snapshot of ' + what + ' has not been cut yet. ' +
      'A day is cut shortly after it closes (by default at 00:05 the next morning, business time); ' +
      'until then there are no final numbers for it.';
  } else {
    $('not-cut-title').textContent = PB.validDay(day) ? 'NO SNAPSHOT' : 'NO SUCH DAY';
    $('not-cut-text').textContent = 'There is no end-of-day snapshot of ' + what + '.';
  }
  $('not-cut-detail').textContent = detail;
  $('meta').appendChild(chip('Snapshot', $('not-cut-title').textContent, 'warn', { id: 'status-chip', 'data-status': 'not-cut' }));
}

function fail(message) {
  document.body.className = 'error';
  setState('state', 'error');
  $('error').hidden = false;
  $('error-text').textContent = message;
}

var dashTitle = null;

function loadBreaches() {
  return PB.getJSON(dayApi).then(function (resp) {
    if (resp.ok && resp.body) renderBreaches(resp.body, loadBreaches);
    return resp.ok ? resp.body : null;
  });
}

function main() {
  renderNav();
  PB.plotlyPrintResize();
  wireSignoff();
  loadBreaches().then(function (view) {
    if (wantVersion === null && view && view.signed_off) wantVersion = view.signed_off.snapshot_version;  // the pinned numbers
    return showDay();
  });
}

function showDay() {
  var snapUrl = api + (wantVersion !== null ? '?version=' + wantVersion : '');
  return Promise.all([PB.getJSON(snapUrl), PB.getJSON('/api/v1/dashboards'), PB.getJSON('/api/v1/kpis')]).then(function (r) {
    var snapResp = r[0], dashes = r[1].ok ? r[1].body : [], kpis = r[2].ok ? r[2].body : [];
    var dash = (dashes || []).filter(function (d) { return d.slug === slug; })[0];
    dashTitle = dash ? dash.title : null;
    $('title').textContent = dashTitle || slug;
    if (snapResp.status === 404) { notCut(snapResp); return; }
    if (!snapResp.ok || !snapResp.body) { fail(PB.problemText(snapResp)); return; }
    var snap = snapResp.body;
    var pack = dash ? dash.pack : null;
    seriesPack = pack;
    var meta = {};
    (kpis || []).forEach(function (k) { if (!pack || k.pack === pack) meta[k.name] = k; });

    document.body.className = 'ready' + (snap.status === 'restated' ? ' restated' : '');
    $('content').hidden = false;
    var csv = $('csv-link');
    csv.hidden = false;
    csv.href = api + '/export.csv';
    renderMeta(snap);
    renderRestated(snap);
    renderKpis(snap, meta);
    $('provenance').textContent = 'Snapshot ' + snap.id + ' · period ' + PB.dateTimeText(snap.period.start, snap.tz) +
      ' – ' + PB.dateTimeText(snap.period.end, snap.tz) + ' · event watermark ' + snap.event_watermark;
    setState('state', 'ready');
    var picks = pickKpis(snap, meta);
    renderRecon(snap).catch(function (e) { setState('recon', 'error'); $('recon-now').textContent = String(e); });
    renderCharts(snap, picks);
    renderBreakdown(snap, pack, picks, meta);
  }).catch(function (err) { fail(String(err && err.message || err)); });
}

setState('state', 'loading');
PB.onReady(main);
