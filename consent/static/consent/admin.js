/* Asks before the rollout controls that cannot be undone (forms with data-confirm).
   Progressive enhancement: without script the forms simply submit. A file, not an
   inline script, because the site's Content-Security-Policy forbids inline code. */
"use strict";
document.addEventListener("submit", function (event) {
  var form = event.target;
  var message = form && form.getAttribute && form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
