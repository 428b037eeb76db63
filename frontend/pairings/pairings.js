// Approving wall screens (issue 4): an admin signed in at /login sees the screens waiting
// (GET /api/v1/pairings, refreshed every 3 s) and approves one by its row or by typing the code
// a screen shows.  The approval is a same-origin POST (the session cookie alone changes nothing
// without the Origin header browsers add).  Everything shown is put in text nodes.
import { $, clear, el, enc, getJSON, postJSON } from '../common/common.js';

const SIGN_IN = '/login?next=/pairings';
const OWN_401 = { signIn: false };   // this page says where to come back to itself
let dashboards = [];

function status(text, kind) {
  $('status').textContent = text;
  $('status').className = 'status' + (kind ? ' ' + kind : '');
}

function cell(text, cls) {
  return el('td', { class: cls || null }, text === null || text === undefined ? '—' : String(text));
}

function dashboardSelect(selected) {
  const select = el('select');
  dashboards.forEach(function (d) {
    const option = el('option', { value: d.slug }, d.title ? d.title + ' (' + d.slug + ')' : d.slug);
    if (d.slug === selected) option.selected = true;
    select.appendChild(option);
  });
  return select;
}

function approve(code, dashboard) {
  return postJSON('/api/v1/pairings/' + enc(code) + '/approve', { dashboard: dashboard }, OWN_401).then(function (r) {
    const body = r.body || {};
    if (r.ok) {
      status('Approved ' + code + ' for ' + body.dashboard + ': the screen opens its wall within seconds.', 'ok');
    } else if (r.status === 401) {
      window.location.replace(SIGN_IN);
    } else if (r.status === 404) {
      status('No screen is waiting with code ' + code + ' (mistyped, or expired: reload the screen).', 'error');
    } else if (r.status === 409) {
      status('Code ' + code + ' was approved already.', 'error');
    } else {
      status('The server answered ' + r.status + (body.detail ? ': ' + body.detail : '') + '.', 'error');
    }
    refresh();
  });
}

function render(waiting) {
  const rows = clear($('rows'));
  waiting.forEach(function (w) {
    const select = dashboardSelect(w.dashboard);
    const button = el('button', { type: 'button' }, 'Approve');
    button.addEventListener('click', function () { approve(w.code, select.value); });
    rows.appendChild(el('tr', { 'data-code': w.code },
      cell(w.code, 'code-cell'), cell(w.dashboard), cell(w.client_ip),
      cell(new Date(w.expires_at).toLocaleTimeString()), el('td', {}, select, button)));
  });
  $('waiting').hidden = waiting.length === 0;
  $('none').hidden = waiting.length !== 0;
}

/** The JSON body of an admin read; on 401 off to sign in (null), other failures thrown with ``why``. */
function adminRead(url, why) {
  return getJSON(url, OWN_401).then(function (r) {
    if (r.status === 401) { window.location.replace(SIGN_IN); return null; }
    if (!r.ok || !r.body) throw new Error(why + ' (' + r.status + ').');
    return r.body;
  });
}

function refresh() {
  return adminRead('/api/v1/pairings', 'Listing screens failed: sign in with an admin key')
    .then(function (waiting) { if (waiting) render(waiting); })
    .catch(function (e) { status(e.message, 'error'); });
}

$('form').addEventListener('submit', function (ev) {
  ev.preventDefault();
  const code = $('code').value.replace(/[\s-]/g, '').toUpperCase();
  if (!code) return;
  approve(code, $('dashboard').value).then(function () { $('code').value = ''; });
});

adminRead('/api/v1/dashboards', 'Sign in with an admin key to approve screens').then(function (list) {
  if (!list) return;
  dashboards = list;
  const top = dashboardSelect(list.length ? list[0].slug : null);
  top.id = 'dashboard';
  top.name = 'dashboard';
  $('dashboard').replaceWith(top);
  refresh();
  window.setInterval(refresh, 3000);
}).catch(function (e) { status(e.message, 'error'); });
