// Approving wall screens (issue 4): an admin signed in at /login sees the screens waiting
// (GET /api/v1/pairings, refreshed every 3 s) and approves one by its row or by typing the code
// a screen shows.  The approval is a same-origin POST (the session cookie alone changes nothing
// without the Origin header browsers add).  Everything shown is put in text nodes.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var dashboards = [];

  function status(text, kind) {
    $('status').textContent = text;
    $('status').className = 'status' + (kind ? ' ' + kind : '');
  }

  function cell(text, cls) {
    var td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '—' : String(text);
    if (cls) td.className = cls;
    return td;
  }

  function dashboardSelect(selected) {
    var select = document.createElement('select');
    dashboards.forEach(function (d) {
      var option = document.createElement('option');
      option.value = d.slug;
      option.textContent = d.title ? d.title + ' (' + d.slug + ')' : d.slug;
      if (d.slug === selected) option.selected = true;
      select.appendChild(option);
    });
    return select;
  }

  function approve(code, dashboard) {
    return fetch('/api/v1/pairings/' + encodeURIComponent(code) + '/approve', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ dashboard: dashboard })
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.ok) {
          status('Approved ' + code + ' for ' + body.dashboard + ': the screen opens its wall within seconds.', 'ok');
        } else if (r.status === 404) {
          status('No screen is waiting with code ' + code + ' (mistyped, or expired: reload the screen).', 'error');
        } else if (r.status === 409) {
          status('Code ' + code + ' was approved already.', 'error');
        } else {
          status('The server answered ' + r.status + (body.detail ? ': ' + body.detail : '') + '.', 'error');
        }
        refresh();
      });
    });
  }

  function render(waiting) {
    var rows = $('rows');
    while (rows.firstChild) rows.removeChild(rows.firstChild);
    waiting.forEach(function (w) {
      var tr = document.createElement('tr');
      tr.setAttribute('data-code', w.code);
      tr.appendChild(cell(w.code, 'code-cell'));
      tr.appendChild(cell(w.dashboard));
      tr.appendChild(cell(w.client_ip));
      tr.appendChild(cell(new Date(w.expires_at).toLocaleTimeString()));
      var td = document.createElement('td');
      var select = dashboardSelect(w.dashboard);
      var button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Approve';
      button.addEventListener('click', function () { approve(w.code, select.value); });
      td.appendChild(select);
      td.appendChild(button);
      tr.appendChild(td);
      rows.appendChild(tr);
    });
    $('waiting').hidden = waiting.length === 0;
    $('none').hidden = waiting.length !== 0;
  }

  function refresh() {
    return fetch('/api/v1/pairings', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 401) { window.location.replace('/login?next=/pairings'); return null; }
        if (!r.ok) throw new Error('Listing screens failed (' + r.status + '): sign in with an admin key.');
        return r.json();
      }).then(function (waiting) { if (waiting) render(waiting); })
      .catch(function (e) { status(e.message, 'error'); });
  }

  $('form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var code = $('code').value.replace(/[\s-]/g, '').toUpperCase();
    if (!code) return;
    approve(code, $('dashboard').value).then(function () { $('code').value = ''; });
  });

  fetch('/api/v1/dashboards', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
    .then(function (r) {
      if (r.status === 401) { window.location.replace('/login?next=/pairings'); return null; }
      if (!r.ok) throw new Error('Sign in with an admin key to approve screens (' + r.status + ').');
      return r.json();
    }).then(function (list) {
      if (!list) return;
      dashboards = list;
      var top = dashboardSelect(list.length ? list[0].slug : null);
      top.id = 'dashboard';
      top.name = 'dashboard';
      $('dashboard').replaceWith(top);
      refresh();
      window.setInterval(refresh, 3000);
    }).catch(function (e) { status(e.message, 'error'); });
})();
