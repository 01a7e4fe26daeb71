// GridLoop console: live queue over server-sent events, keyboard moves, "select all new".
// No framework and no inline script (the page's Content-Security-Policy forbids it).
(function () {
  "use strict";

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#rows tr.row")); }

  function selectAll() {
    var box = document.getElementById("select-new");
    if (!box) return;
    box.addEventListener("change", function () {
      document.querySelectorAll('#rows input[name="case"]').forEach(function (c) { c.checked = box.checked; });
    });
  }

  function live() {
    var section = document.getElementById("queue");
    if (!section || !window.EventSource) return;
    var known = {};
    rows().forEach(function (r) { known[r.dataset.case] = true; });
    var pending = null;
    function refresh() {
      pending = null;
      var checked = {};
      document.querySelectorAll('#rows input[name="case"]:checked').forEach(function (c) { checked[c.value] = true; });
      fetch(section.dataset.rows, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
          var fresh = false;
          doc.querySelectorAll("#rows tr.row").forEach(function (r) {
            if (!known[r.dataset.case]) { r.classList.add("fresh"); known[r.dataset.case] = true; fresh = true; }
          });
          doc.querySelectorAll('#rows input[name="case"]').forEach(function (c) { if (checked[c.value]) c.checked = true; });
          section.innerHTML = doc.body.firstChild.innerHTML;
          if (fresh) {
            var a = document.getElementById("announce");
            if (a) a.textContent = a.dataset.text + " " + new Date().toLocaleTimeString();
          }
        })
        .catch(function () { /* the next change or the reconnect tries again */ });
    }
    var es = new EventSource(section.dataset.stream, { withCredentials: true });
    es.addEventListener("hello", function () { var l = document.getElementById("live"); if (l) l.hidden = false; });
    es.addEventListener("change", function () { if (!pending) pending = setTimeout(refresh, 250); });
    // the server ends the stream once the session is revoked or expired: reload (to the sign-in page)
    es.addEventListener("end", function () { es.close(); window.location.reload(); });
    es.onerror = function () { var l = document.getElementById("live"); if (l) l.hidden = true; };
  }

  function keys() {
    var at = -1;
    document.addEventListener("keydown", function (e) {
      var tag = (e.target && e.target.tagName) || "";
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
      var list = rows();
      if (e.key === "/") {
        var f = document.querySelector("#filters select");
        if (f) { e.preventDefault(); f.focus(); }
        return;
      }
      if ((e.key === "j" || e.key === "k") && list.length) {
        e.preventDefault();
        at = Math.max(0, Math.min(list.length - 1, at + (e.key === "j" ? 1 : -1)));
        var link = list[at].querySelector("a.case-link");
        if (link) link.focus();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { selectAll(); live(); keys(); });
})();
