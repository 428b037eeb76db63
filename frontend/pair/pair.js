// Pairing a wall screen without typing secrets (issue 4).
// The screen asks for a pairing, shows the short code, and polls with its secret; once an
// administrator approves the code, the claim answer sets the display key as an HttpOnly
// cookie (this script never sees it) and the screen opens its wall.  A link with the secret
// in the fragment (#s=..., never sent to the server, so never in its logs) pairs at once.
import { $, enc, postJSON } from '../common/common.js';

const dashboard = new URLSearchParams(window.location.search).get('dashboard') || 'contact-centre';
const NO_SIGN_IN = { signIn: false };   // a screen pairs; it never goes to the sign-in page

function status(text, isError) {
  $('status').textContent = text;
  $('status').className = 'status' + (isError ? ' error' : '');
}

function claim(secret) {
  return postJSON('/api/v1/pairings/claim', { secret: secret }, NO_SIGN_IN).then(function (r) {
    if (r.status === 404) throw new Error('This pairing has expired. Reload to get a new code.');
    if (!r.ok || !r.body) throw new Error(r.status ? 'The server answered ' + r.status + '.' : 'The server did not answer.');
    if (r.body.status !== 'approved') return false;
    $('headline').textContent = 'Paired';
    status('Opening the ' + r.body.dashboard + ' wall…');
    window.location.replace('/wall/' + enc(r.body.dashboard));
    return true;
  });
}

function poll(secret) {
  claim(secret).then(function (done) {
    if (!done) window.setTimeout(function () { poll(secret); }, 2000);
  }).catch(function (e) { status(e.message, true); });
}

// The requested dashboard is stored with the pairing (an admin may approve another one).
function start() {
  postJSON('/api/v1/pairings', { dashboard: dashboard }, NO_SIGN_IN).then(function (r) {
    if (r.status === 429) {  // too many screens waiting: try again when the server says
      const wait_s = parseInt(r.headers.get('Retry-After') || '30', 10);
      status('Too many screens are waiting; trying again in ' + wait_s + ' s…', true);
      window.setTimeout(start, wait_s * 1000);
      return;
    }
    if (!r.ok || !r.body) throw new Error('Could not start pairing (' + r.status + ').');
    const p = r.body;
    $('lead').textContent = 'Show this code to an administrator:';
    $('code').textContent = p.code;
    $('how-cmd').textContent = 'POST /api/v1/pairings/' + p.code + '/approve {"dashboard": "' + dashboard + '"}';
    $('how').hidden = false;
    status('Waiting for approval… (the code expires in ' + Math.round(p.expires_in_s / 60) + ' minutes)');
    poll(p.secret);
  }).catch(function (e) { status(e.message, true); });
}

const given = new URLSearchParams(window.location.hash.slice(1)).get('s');
if (given) {
  history.replaceState(null, '', window.location.pathname + window.location.search);  // drop the secret
  $('lead').textContent = 'Pairing…';
  claim(given).then(function (done) {
    if (!done) poll(given);
  }).catch(function (e) { status(e.message, true); });
} else {
  start();
}
