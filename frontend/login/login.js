// Sign a browser in with a key: the server answers with an HttpOnly, SameSite=Strict cookie,
// so the key is never kept by page scripts nor put in a URL.  Then on to ?next= (a path on this
// site only) or the home page.
import { $, postJSON, problemText, safeNext } from '../common/common.js';

const next = safeNext(new URLSearchParams(window.location.search).get('next'));

$('form').addEventListener('submit', function (ev) {
  ev.preventDefault();
  const input = $('key');
  postJSON('/api/v1/session', { key: input.value.trim() }, { signIn: false }).then(function (resp) {
    input.value = '';
    if (resp.ok) { window.location.replace(next); return; }
    const status = $('status');
    status.textContent = resp.status === 401 || resp.status === 422
      ? 'That key was not accepted.' : 'Could not sign in: ' + problemText(resp);
    status.className = 'status error';
  });
});
