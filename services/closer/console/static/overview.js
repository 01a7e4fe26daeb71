// GridLoop ops overview: refresh the numbers, table, map and charts every 10 seconds.
(function () {
  "use strict";
  var section = document.getElementById("overview");
  if (!section) return;
  function refresh() {
    fetch(section.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) { section.innerHTML = html; })
      .catch(function () { /* keep the last numbers; try again next time */ });
  }
  setInterval(refresh, 10000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
})();
