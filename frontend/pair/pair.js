// Pairing a wall screen without typing secrets (issue 4).
// The screen asks for a pairing, shows the short code, and polls with its secret; once an
// administrator approves the code, the claim answer sets the display key as an HttpOnly
// cookie (this script never sees it) and the screen opens its wall.  A link with the secret
// in the fragment (#s=..., never sent to the server, so never in its logs) pairs at once.
(function () {
  'use strict';
  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(window.location.search);
  var dashboard = params.get('dashboard') || 'contact-centre';

  function status(text, isError) {
    $('status').textContent = text;
    $('status').className = 'status' + (isError ? ' error' : '');
  }

  function post(url, body) {
    return fetch(url, {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    });
  }

  function claim(secret) {
    return post('/api/v1/pairings/claim', { secret: secret }).then(function (r) {
      if (r.status === 404) throw new Error('This pairing has expired. Reload to get a new code.');
      if (!r.ok) throw new Error('The server answered ' + r.status + '.');
      return r.json();
    }).then(function (answer) {
      if (answer.status === 'approved') {
        $('headline').textContent = 'Paired';
        status('Opening the ' + answer.dashboard + ' wall…');
        window.location.replace('/wall/' + encodeURIComponent(answer.dashboard));
        return true;
      }
      return false;
    });
  }

  function poll(secret) {
    claim(secret).then(function (done) {
      if (!done) window.setTimeout(function () { poll(secret); }, 2000);
    }).catch(function (e) { status(e.message, true); });
  }

  var fragment = new URLSearchParams(window.location.hash.slice(1));
  var given = fragment.get('s');
  if (given) {
    history.replaceState(null, '', window.location.pathname + window.location.search);  // drop the secret
    $('lead').textContent = 'Pairing…';
    claim(given).then(function (done) {
      if (!done) poll(given);
    }).catch(function (e) { status(e.message, true); });
    return;
  }

  // The requested dashboard is stored with the pairing (an admin may approve another one).
  function start() {
    post('/api/v1/pairings', { dashboard: dashboard }).then(function (r) {
      if (r.status === 429) {  // too many screens waiting: try again when the server says
        var wait_s = parseInt(r.headers.get('Retry-After') || '30', 10);
        status('Too many screens are waiting; trying again in ' + wait_s + ' s…', true);
        window.setTimeout(start, wait_s * 1000);
        return null;
      }
      if (!r.ok) throw new Error('Could not start pairing (' + r.status + ').');
      return r.json();
    }).then(function (p) {
      if (!p) return;
      $('lead').textContent = 'Show this code to an administrator:';
      $('code').textContent = p.code;
      $('how-cmd').textContent = 'POST /api/v1/pairings/' + p.code + '/approve {"dashboard": "' + dashboard + '"}';
      $('how').hidden = false;
      status('Waiting for approval… (the code expires in ' + Math.round(p.expires_in_s / 60) + ' minutes)');
      poll(p.secret);
    }).catch(function (e) { status(e.message, true); });
  }
  start();
})();
