// GridLoop rider pages: send a report (never twice, never lost), +1, feedback. No framework.
(function () {
  "use strict";
  // an after-photo the closer cannot serve is dropped rather than shown broken (no inline onerror:
  // the page's Content-Security-Policy forbids inline handlers)
  function dropBrokenPhoto(img) {
    var section = img.closest("section");
    img.remove();
    if (section && !section.querySelector("img")) section.hidden = true;
  }
  document.querySelectorAll("img.after-photo").forEach(function (img) {
    if (img.complete && img.naturalWidth === 0) { dropBrokenPhoto(img); return; }
    img.addEventListener("error", function () { dropBrokenPhoto(img); });
  });

  // the page's settings arrive as a JSON data block: the Content-Security-Policy allows no inline script
  var CFG = document.getElementById("gl-config");
  var G = window.GL || (CFG ? JSON.parse(CFG.textContent || "{}") : {}), T = G.text || {}, KEY = "gl_outbox";
  var $ = function (id) { return document.getElementById(id); };
  var photos = [];  // {blob, url, sha}
  var location_ = null;

  function newKey() {  // crypto.randomUUID needs a secure context; getRandomValues does not
    var b = new Uint8Array(16); crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }
  function say(el, text, cls) { if (el) { el.textContent = text; el.className = "msg " + (cls || ""); } }
  function outbox() { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; } }
  function save(list) {
    try { localStorage.setItem(KEY, JSON.stringify(list)); }
    catch (e) {  // storage full: keep the words, drop the photos rather than the report
      list.forEach(function (i) { i.photos = []; });
      try { localStorage.setItem(KEY, JSON.stringify(list)); } catch (e2) { /* nothing more to do */ }
    }
    showPending();
  }
  function showPending() {
    var n = outbox().length, el = $("pending");
    if (!el) return;
    el.hidden = !n;
    el.textContent = n ? T.offline_pending.replace("{n}", n) : "";
  }
  function toBlob(dataUrl) {
    var parts = dataUrl.split(","), bin = atob(parts[1]), arr = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) arr[i] = bin.charCodeAt(i);
    return new Blob([arr], { type: "image/jpeg" });
  }

  // one attempt to send one stored report; resolves to the answer, or "offline" / "failed"
  function send(item) {
    var fd = new FormData();
    Object.keys(item.fields).forEach(function (k) { fd.append(k, item.fields[k]); });
    item.photos.forEach(function (p, i) { fd.append("photos", toBlob(p), "photo" + i + ".jpg"); });
    return fetch("/api/v1/reports", {
      method: "POST", body: fd, credentials: "same-origin",
      headers: { "Idempotency-Key": item.key, "Accept": "application/json" }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.status === 202) return { ok: true, body: body };
        if (r.status >= 500) return { offline: true };
        return { ok: false, status: r.status, body: body, retry: r.headers.get("Retry-After") };
      });
    }, function () { return { offline: true }; });
  }
  function settle(item, res) {
    if (res.offline) return false;
    save(outbox().filter(function (i) { return i.key !== item.key; }));
    return true;
  }
  var flushing = false;
  function flush() {
    if (flushing || !navigator.onLine) return;
    var list = outbox();
    if (!list.length) return;
    flushing = true;
    var item = list[0];
    send(item).then(function (res) {
      flushing = false;
      if (settle(item, res)) {
        if (res.ok && item.key === G.currentKey) receipt(res.body);
        flush();
      }
    });
  }
  window.addEventListener("online", flush);
  setInterval(flush, 15000);

  function receipt(body) {
    setupNotify(body.report_id);
    var form = $("report");
    if (form) form.hidden = true;
    var oc = $("open-cases"); if (oc) oc.hidden = true;
    var box = $("receipt"); if (!box) return;
    $("receipt-id").textContent = body.report_id;
    $("receipt-track").href = "/t/" + encodeURIComponent(body.report_id);
    $("receipt-status").textContent = (G.status || {})[body.status] || body.status;
    box.hidden = false;
    window.scrollTo(0, 0);
  }

  function submit(fields) {
    var msg = $("msg"), btn = $("send");
    var item = { key: G.currentKey || (G.currentKey = newKey()), fields: fields,
                 photos: photos.map(function (p) { return p.url; }), at: Date.now() };
    // kept on the phone first, so closing the page or losing signal mid-send loses nothing
    save(outbox().filter(function (i) { return i.key !== item.key; }).concat([item]));
    if (btn) btn.disabled = true;
    if (!navigator.onLine) { say(msg, T.offline_saved, "ok"); return; }
    say(msg, T.sending);
    send(item).then(function (res) {
      settle(item, res);
      if (res.ok) return receipt(res.body);
      if (res.offline) return say(msg, T.offline_saved, "ok");
      if (btn) btn.disabled = false;
      G.currentKey = null;  // the server refused this one for good: a corrected report is a new one
      var err = (res.body && res.body.error) || {};
      if (res.status === 429) return say(msg, T.rate_limited.replace("{n}", res.retry || "60"), "err");
      say(msg, T.error + "：" + (err.message || res.status), "err");
    });
  }

  function fieldsOf(form, extra) {
    var f = {};
    if (G.code) { f.code = G.code; f.via = G.via || "scan"; }
    if (location_) { f.lat = location_.lat; f.lon = location_.lon; }
    ["description", "platform", "rider_no", "website"].forEach(function (n) {
      var el = form.elements[n]; if (el && el.value) f[n] = el.value;
    });
    if (form.elements.danger_now && form.elements.danger_now.checked) f.danger_now = "true";
    var cat = form.querySelector("input[name=category]:checked");
    if (cat) f.category = cat.value;
    Object.keys(extra || {}).forEach(function (k) { f[k] = extra[k]; });
    return f;
  }

  // photos are downscaled on the phone: a 4 MB camera file becomes ~200 KB before it is sent
  function downscale(file) {
    return new Promise(function (resolve, reject) {
      var img = new Image(), src = URL.createObjectURL(file);
      img.onload = function () {
        var max = 1280, s = Math.min(1, max / Math.max(img.naturalWidth, img.naturalHeight));
        var c = document.createElement("canvas");
        c.width = Math.round(img.naturalWidth * s); c.height = Math.round(img.naturalHeight * s);
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        URL.revokeObjectURL(src);
        resolve(c.toDataURL("image/jpeg", 0.8));
      };
      img.onerror = function () { URL.revokeObjectURL(src); reject(new Error("not an image")); };
      img.src = src;
    });
  }
  function drawThumbs() {
    var box = $("thumbs"); if (!box) return;
    box.textContent = "";
    photos.forEach(function (p, i) {
      var fig = document.createElement("figure"), img = document.createElement("img"), x = document.createElement("button");
      img.src = p.url; img.alt = ""; x.type = "button"; x.textContent = "×"; x.title = T.photo_removed;
      x.onclick = function () { photos.splice(i, 1); drawThumbs(); };
      fig.appendChild(img); fig.appendChild(x); box.appendChild(fig);
    });
  }

  function setupForm() {
    var form = $("report"); if (!form) return;
    var desc = $("description"), count = $("count"), input = $("photo-input");
    if (desc) desc.addEventListener("input", function () { count.textContent = desc.value.length; });
    if (input) input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files, 0, 3 - photos.length);
      Promise.all(files.map(function (f) { return downscale(f).catch(function () { return null; }); }))
        .then(function (urls) {
          urls.forEach(function (u) { if (u && photos.length < 3) photos.push({ url: u }); });
          input.value = ""; drawThumbs();
        });
    });
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var f = fieldsOf(form);
      if (!f.category) return say($("msg"), T.pick_category, "err");
      submit(f);
    });
    Array.prototype.forEach.call(document.querySelectorAll(".plus1"), function (b) {
      b.addEventListener("click", function () {  // one tap: join the open case
        Array.prototype.forEach.call(document.querySelectorAll(".plus1"), function (o) { o.disabled = true; });
        submit(fieldsOf(form, { category: b.dataset.category, plus_one_case_id: b.dataset.case }));
      });
    });
  }

  function setupLocate() {
    var b = $("locate"); if (!b) return;
    b.addEventListener("click", function () {
      var out = $("located"); out.hidden = false; out.textContent = T.locating;
      if (!navigator.geolocation) { out.textContent = T.location_failed; return; }
      navigator.geolocation.getCurrentPosition(function (pos) {
        location_ = { lat: pos.coords.latitude.toFixed(6), lon: pos.coords.longitude.toFixed(6) };
        fetch("/api/v1/locate?lat=" + location_.lat + "&lon=" + location_.lon).then(function (r) { return r.json(); })
          .then(function (where) {
            out.textContent = "📍 " + T.your_location + " " + location_.lat + ", " + location_.lon + " · " +
              (where.station_name || T.outside);
          }, function () { out.textContent = "📍 " + location_.lat + ", " + location_.lon; });
        G.via = "manual"; $("report").hidden = false;
      }, function () { out.textContent = T.location_failed; }, { enableHighAccuracy: true, timeout: 15000 });
    });
  }

  function setupFeedback() {
    var box = $("feedback"); if (!box) return;
    var stars = box.querySelectorAll(".rating label");
    Array.prototype.forEach.call(stars, function (l, i) {
      l.addEventListener("click", function () {
        Array.prototype.forEach.call(stars, function (o, j) { o.className = j <= i ? "on" : ""; });
      });
    });
    function answer(fixed) {
      var msg = $("fb-msg"), comment = $("fb-comment").value.trim();
      if (!fixed && !comment) return say(msg, T.comment_required, "err");
      var r = box.querySelector("input[name=rating]:checked");
      var body = { fixed: fixed, comment: comment };
      if (r) body.rating = parseInt(r.value, 10);
      $("fixed-yes").disabled = $("fixed-no").disabled = true;
      fetch("/api/v1/reports/" + encodeURIComponent(G.reportId) + "/feedback", {
        method: "POST", credentials: "same-origin",
        headers: G.trackingKey ? { "Content-Type": "application/json", "X-Tracking-Key": G.trackingKey }
          : { "Content-Type": "application/json" }, body: JSON.stringify(body)
      }).then(function (res) {
        if (res.ok) { say(msg, T.thanks_feedback, "ok"); setTimeout(function () { location.reload(); }, 600); return; }
        return res.json().then(function (b) {
          $("fixed-yes").disabled = $("fixed-no").disabled = false;
          say(msg, T.error + "：" + ((b.error || {}).message || res.status), "err");
        });
      }, function () { $("fixed-yes").disabled = $("fixed-no").disabled = false; say(msg, T.retry_later, "err"); });
    }
    $("fixed-yes").addEventListener("click", function () { answer(true); });
    $("fixed-no").addEventListener("click", function () { answer(false); });
  }

  function trackingHeaders(json) {  // the secret from the tracking link goes along, never elsewhere
    var h = json ? { "Content-Type": "application/json" } : {};
    if (G.trackingKey) h["X-Tracking-Key"] = G.trackingKey;
    return h;
  }

  function setupReply() {  // answer a question, or add words or a photo later
    var send = $("reply-send"); if (!send) return;
    send.addEventListener("click", function () {
      var msg = $("reply-msg"), text = $("reply-text").value.trim(), file = $("reply-photo").files[0];
      var q = $("reply-question");
      if (!text && !file) return say(msg, T.reply_empty, "err");
      var form = new FormData();
      if (text) form.append("text", text);
      if (q) form.append("question_id", q.value);
      if (file) form.append("photo", file);
      send.disabled = true;
      fetch("/api/v1/reports/" + encodeURIComponent(G.reportId) + "/replies", {
        method: "POST", credentials: "same-origin", headers: trackingHeaders(false), body: form
      }).then(function (res) {
        if (res.ok) { say(msg, T.reply_sent, "ok"); setTimeout(function () { location.reload(); }, 600); return; }
        return res.json().then(function (b) { send.disabled = false; say(msg, T.error + "：" + ((b.error || {}).message || res.status), "err"); });
      }, function () { send.disabled = false; say(msg, T.retry_later, "err"); });
    });
  }

  function setupNudge() {  // 催办: once a day per report
    var btn = $("nudge-btn"); if (!btn) return;
    btn.addEventListener("click", function () {
      var msg = $("nudge-msg");
      btn.disabled = true;
      fetch("/api/v1/reports/" + encodeURIComponent(G.reportId) + "/nudge", {
        method: "POST", credentials: "same-origin", headers: trackingHeaders(false)
      }).then(function (res) {
        if (res.ok) return say(msg, T.nudge_sent, "ok");
        if (res.status === 429) return say(msg, T.nudge_wait, "err");
        return res.json().then(function (b) { btn.disabled = false; say(msg, T.error + "：" + ((b.error || {}).message || res.status), "err"); });
      }, function () { btn.disabled = false; say(msg, T.retry_later, "err"); });
    });
  }

  function watchStatus() {  // the tracking page follows the case without a manual reload
    if (!G.reportId || $("feedback")) return;
    setInterval(function () {
      fetch("/api/v1/reports/" + encodeURIComponent(G.reportId)).then(function (r) { return r.json(); })
        .then(function (v) { if (v.status && v.status !== G.reportStatus) location.reload(); }, function () {});
    }, 15000);
  }

  // --- the service worker: the scan page opens without signal after a first visit, and pushes ---
  function registerWorker() {
    if (!("serviceWorker" in navigator) || !G.sw) return null;
    return navigator.serviceWorker.register(G.sw, { scope: "/" }).catch(function () { return null; });
  }

  // "有进展通知我": this browser follows one report (the server checks the rider cookie or tracking key)
  var PUSHED = "gl_push";
  function followed() { try { return JSON.parse(localStorage.getItem(PUSHED) || "[]"); } catch (e) { return []; } }
  function remember(reportId, on) {
    var list = followed().filter(function (r) { return r !== reportId; });
    if (on) list.push(reportId);
    try { localStorage.setItem(PUSHED, JSON.stringify(list.slice(-50))); } catch (e) { /* only the button's state */ }
  }
  function keyBytes(b64) {
    var s = atob((b64 + "===".slice((b64.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  function pushCall(method, reportId, body) {
    var headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (G.trackingKey && reportId === G.reportId) headers["X-Tracking-Key"] = G.trackingKey;
    return fetch("/api/v1/reports/" + encodeURIComponent(reportId) + "/push", {
      method: method, credentials: "same-origin", headers: headers, body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) { return { status: r.status, body: b }; });
    });
  }
  // the subscription as PushSubscription.toJSON() gives it; what the button sends once the browser subscribed
  function sendSubscription(reportId, sub) {
    var body = { endpoint: sub.endpoint, keys: sub.keys, lang: G.lang === "en" ? "en" : "zh" };
    if (sub.expirationTime !== undefined) body.expirationTime = sub.expirationTime;
    return pushCall("POST", reportId, body).then(function (res) {
      if (res.status === 200 || res.status === 201) remember(reportId, true);
      return res;
    });
  }
  function dropSubscription(reportId, endpoint) {
    return pushCall("DELETE", reportId, { endpoint: endpoint }).then(function (res) {
      if (res.status === 200) remember(reportId, false);
      return res;
    });
  }
  window.GLPush = { send: sendSubscription, drop: dropSubscription };

  function setupNotify(reportId) {
    var box = $("notify"), on = $("notify-on"), off = $("notify-off"), msg = $("notify-msg");
    if (!box || !reportId || box.dataset.ready) return;
    box.dataset.ready = "1"; box.hidden = false;
    function shown(following) { on.hidden = following; off.hidden = !following; if (following) say(msg, T.notify_on, "ok"); }
    var able = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window && G.vapidKey;
    if (!able) { on.hidden = true; say(msg, T.notify_unsupported); return; }
    shown(followed().indexOf(reportId) >= 0);
    on.addEventListener("click", function () {
      on.disabled = true;
      Notification.requestPermission().then(function (perm) {
        if (perm !== "granted") throw new Error("denied");
        return navigator.serviceWorker.ready;
      }).then(function (reg) {
        return reg.pushManager.getSubscription().then(function (sub) {
          return sub || reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(G.vapidKey) });
        });
      }).then(function (sub) { return sendSubscription(reportId, sub.toJSON()); }).then(function (res) {
        on.disabled = false;
        if (res.status === 200 || res.status === 201) return shown(true);
        say(msg, T.error + "：" + (((res.body || {}).error || {}).message || res.status), "err");
      }).catch(function (e) {
        on.disabled = false;
        say(msg, e && e.message === "denied" ? T.notify_denied : T.notify_unsupported, "err");
      });
    });
    off.addEventListener("click", function () {
      navigator.serviceWorker.ready.then(function (reg) { return reg.pushManager.getSubscription(); })
        .then(function (sub) { return sub ? dropSubscription(reportId, sub.endpoint) : (remember(reportId, false), { status: 200 }); })
        .then(function (res) { if (res.status === 200) { shown(false); say(msg, T.notify_stopped, "ok"); } },
              function () { say(msg, T.retry_later, "err"); });
    });
  }

  registerWorker();
  setupForm(); setupLocate(); setupFeedback(); setupReply(); setupNudge(); watchStatus(); showPending(); flush();
  if (G.reportId) setupNotify(G.reportId);
})();
