// Sign a browser in with a key: the server answers with an HttpOnly, SameSite=Strict cookie,
// so the key is never kept by page scripts nor put in a URL.
(function () {
  'use strict';
  var next = new URLSearchParams(window.location.search).get('next') || '/';
  if (next.charAt(0) !== '/' || next.charAt(1) === '/') next = '/';  // same-site paths only
  document.getElementById('form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    var input = document.getElementById('key');
    fetch('/api/v1/session', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ key: input.value.trim() })
    }).then(function (r) {
      input.value = '';
      if (!r.ok) throw new Error('That key was not accepted.');
      window.location.replace(next);
    }).catch(function (e) {
      var s = document.getElementById('status');
      s.textContent = e.message;
      s.className = 'status error';
    });
  });
})();
