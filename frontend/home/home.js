/* Pulseboard home page: /
 *
 * Lists every dashboard (GET /api/v1/home, with the browser session from /login) with links to its
 * live wall, today's end-of-day page and this month's scorecard, "today" and "this month" being the
 * server's view clock in the dashboard's own zone.  Signed-out browsers (and wall screens, whose
 * display key cannot list dashboards) get the sign-in link instead; the page never redirects.
 *
 * Test hooks: body[data-state] = loading | ready | signed-out | error; rows tr[data-slug] with
 * a.wall-link, a.day-link, a.scorecard-link.
 */
import { $, clear, dateTimeText, dayLabel, el, getJSON, monthLabel, problemText, request } from '../common/common.js';

const OWN_401 = { signIn: false };   // signed out is a state of this page, not a redirect

function show(state) {
  document.body.dataset.state = state;
  $('content').hidden = state !== 'ready';
  $('signed-out').hidden = state !== 'signed-out';
  $('error').hidden = state !== 'error';
  $('sign-in').hidden = state !== 'signed-out';
}

function renderWho(who) {
  const signedIn = !!(who && who.scope);
  $('who').textContent = signedIn ? 'Signed in as ' + (who.name || 'a key') + ' (' + who.scope + ' key)' : '';
  $('sign-out').hidden = !signedIn;
  $('pairings-link').hidden = !(who && who.scope === 'admin');
}

function row(d) {
  return el('tr', { 'data-slug': d.slug },
    el('th', { scope: 'row' }, el('span', { class: 'kpi-title' }, d.title || d.slug), el('span', { class: 'kpi-name' }, d.slug)),
    el('td', {}, d.tz),
    el('td', {}, el('a', { class: 'wall-link', href: d.links.wall }, 'Wall')),
    el('td', {}, el('a', { class: 'day-link', href: d.links.day }, dayLabel(d.today))),
    el('td', {}, el('a', { class: 'scorecard-link', href: d.links.scorecard }, monthLabel(d.month))));
}

function render(home) {
  const tbody = clear(document.querySelector('#dashboards tbody'));
  home.dashboards.forEach(function (d) { tbody.appendChild(row(d)); });
  $('dashboards').hidden = home.dashboards.length === 0;
  $('empty').hidden = home.dashboards.length !== 0;
  $('as-of').textContent = 'Today and this month in each dashboard\'s zone, by ' +
    (home.clock === 'event' ? 'event time (the newest event): ' : 'the server clock: ') + dateTimeText(home.as_of, 'UTC') + ' UTC';
}

function load() {
  show('loading');
  return Promise.all([getJSON('/api/v1/home', OWN_401), getJSON('/api/v1/session', OWN_401)]).then(function (r) {
    const home = r[0], who = r[1].ok ? r[1].body : null;
    renderWho(who);
    if (home.status === 401) {
      $('signed-out-text').textContent = 'Sign in with a read or admin key to see the dashboards.';
      show('signed-out');
    } else if (home.status === 403) {
      $('signed-out-text').textContent = 'This browser holds a ' + ((who && who.scope) || 'different') +
        ' key, which cannot list dashboards: sign in with a read or admin key.';
      show('signed-out');
    } else if (!home.ok || !home.body) {
      $('error-text').textContent = problemText(home);
      show('error');
    } else {
      render(home.body);
      show('ready');
    }
  });
}

$('sign-out').addEventListener('click', function () {
  request('DELETE', '/api/v1/session', undefined, OWN_401).then(load);
});

load();
