// Live updates for the field staff page: no framework, no build step, about 2 KB.
// The server sends a small "change" event when something this page shows may have moved; the
// page then fetches itself again and swaps in its fresh [data-live] sections, leaving alone a
// section where the user is typing.
(function () {
  "use strict";
  var body = document.body;
  var kinds = (body.getAttribute("data-live-kinds") || "").split(" ").filter(Boolean);
  var node = body.getAttribute("data-live-node") || "";
  var badge = document.getElementById("live");

  Array.prototype.forEach.call(document.querySelectorAll("form[data-autosubmit] select"), function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  if (!kinds.length || !window.EventSource || !badge) { return; }

  var busy = false;
  var again = false;
  var stale = false;  // a section was kept because the user was typing in it

  function typingIn(element) {
    var active = document.activeElement;
    return active && active !== body && element.contains(active) &&
      (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT");
  }

  // What the user typed in a section survives its replacement (matched by form and field).
  function typed(section) {
    var saved = {};
    Array.prototype.forEach.call(section.querySelectorAll("input[type=text], textarea"), function (field) {
      if (field.value && field.form) { saved[field.form.getAttribute("action") + "|" + field.name] = field.value; }
    });
    return saved;
  }

  function retype(section, saved) {
    Array.prototype.forEach.call(section.querySelectorAll("input[type=text], textarea"), function (field) {
      var key = field.form ? field.form.getAttribute("action") + "|" + field.name : "";
      if (saved.hasOwnProperty(key)) { field.value = saved[key]; }
    });
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    stale = false;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) { location.reload(); }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        body.setAttribute("data-live-version", fresh.body.getAttribute("data-live-version") || "");
        Array.prototype.forEach.call(document.querySelectorAll("[data-live]"), function (old) {
          if (typingIn(old)) { stale = true; return; }
          var next = fresh.querySelector('[data-live="' + old.getAttribute("data-live") + '"]');
          if (!next) { return; }
          var saved = typed(old);
          var copy = document.importNode(next, true);
          old.replaceWith(copy);
          retype(copy, saved);
        });
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* the next event or the next page load will catch up */ })
      .then(function () {
        busy = false;
        if (again) { again = false; window.setTimeout(refresh, 1000); }
      });
  }

  // Catch up on what was held back once the user leaves the field (without submitting).
  document.addEventListener("focusout", function () {
    window.setTimeout(function () { if (stale && !typingIn(body)) { refresh(); } }, 300);
  });

  function wants(change) {
    if (change.all) { return true; }
    var relevant = change.kinds.some(function (kind) { return kinds.indexOf(kind) >= 0; });
    if (!relevant || !node) { return relevant; }
    return change.kinds.indexOf("registry") >= 0 || change.nodes.indexOf(node) >= 0;
  }

  var source = new EventSource("/events");
  source.addEventListener("open", function () {
    badge.className = "live on";
    badge.textContent = badge.getAttribute("data-on");
  });
  source.addEventListener("error", function () {
    badge.className = "live";
    badge.textContent = badge.getAttribute("data-off");
  });
  // The stream's first event says how far the gateway has moved since this page was drawn:
  // changes in between (or while the stream was down) had nobody to tell this page.
  source.addEventListener("hello", function (event) {
    var version = String(JSON.parse(event.data).version);
    if (version !== body.getAttribute("data-live-version")) { refresh(); }
  });
  source.addEventListener("change", function (event) {
    if (wants(JSON.parse(event.data))) { refresh(); }
  });
})();
