// Progressive enhancement of the privacy dashboard: the pages work without it.
// A purpose's on/off form is sent in the background and its card replaced in place;
// the confirmation is read out by the live region. Any failure falls back to a normal
// form submission, which the server answers with a full page.
(function () {
  "use strict";

  function announce(text) {
    var region = document.getElementById("live-status");
    if (!region) { return; }
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  function enhance(form) {
    form.addEventListener("submit", function (event) {
      if (!window.fetch || !window.FormData) { return; }
      event.preventDefault();
      var card = form.closest(".purpose");
      var button = form.querySelector("button");
      if (button) { button.disabled = true; }
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { "Accept": "application/json" }
      }).then(function (response) {
        if (!response.ok) { throw new Error("status " + response.status); }
        return response.json();
      }).then(function (data) {
        var holder = document.createElement("div");
        holder.innerHTML = data.html;
        var fresh = holder.firstElementChild;
        card.replaceWith(fresh);
        var next = fresh.querySelector("form.js-choice");
        if (next) { enhance(next); }
        var focusTarget = fresh.querySelector("button") || fresh;
        focusTarget.focus();
        announce(data.message);
      }).catch(function () {
        form.submit();
      });
    });
  }

  document.querySelectorAll("form.js-choice").forEach(enhance);
})();
