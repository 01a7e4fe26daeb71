// GridLoop riders' service worker: the scan page's shell offline, and the pushes "有进展通知我" asked for.
// Served at /sw.js (scope /); its ?v= is the pages' asset version, so a new release installs a new worker.
"use strict";
var VERSION = new URL(self.location).searchParams.get("v") || "0";
var CACHE = "gl-shell-" + VERSION;
var ASSETS = ["/static/rider.js?v=" + VERSION, "/static/rider.css?v=" + VERSION, "/r"];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(CACHE).then(function (c) { return c.addAll(ASSETS); }).then(function () {
    return self.skipWaiting();
  }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k.indexOf("gl-shell-") === 0 && k !== CACHE; })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }).then(keepOpenPages));
});

// the page that installed the worker was loaded before it ran: keep a copy of it (and of any other
// open scan page) now, so the very first scan already works without signal next time
function keepOpenPages() {
  return self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (list) {
    return Promise.all(list.map(function (client) {
      var url = new URL(client.url);
      if (url.origin !== self.location.origin || !isScanPage(url)) return null;
      return fetch(url.href, { credentials: "same-origin" }).then(function (response) {
        return response.ok ? caches.open(CACHE).then(function (c) { return c.put(url.origin + url.pathname, response); }) : null;
      }).catch(function () { return null; });
    }));
  });
}

function isScanPage(url) { return url.pathname === "/r" || url.pathname.indexOf("/r/") === 0; }

// a scan page (/r/{code}) or the typed-code page (/r): the network first, so a rider with signal
// always sees today's open cases; a copy kept for the next scan without signal (the form then
// queues the report on the phone: rider.js)
function scanPage(request, url) {
  var key = url.origin + url.pathname;
  return fetch(request).then(function (response) {
    if (response.ok) {
      var copy = response.clone();
      caches.open(CACHE).then(function (c) { return c.put(key, copy); });
    }
    return response;
  }, function () {
    return caches.match(key, { cacheName: CACHE }).then(function (hit) {
      return hit || caches.match(url.origin + "/r", { cacheName: CACHE });
    }).then(function (hit) { return hit || Response.error(); });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request, url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (request.mode === "navigate" && isScanPage(url)) {
    event.respondWith(scanPage(request, url));
  } else if (url.pathname.indexOf("/static/") === 0) {
    event.respondWith(caches.match(request, { cacheName: CACHE }).then(function (hit) {
      return hit || fetch(request);
    }));
  }
});

self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = { title: "GridLoop" }; }
  event.waitUntil(self.registration.showNotification(data.title || "GridLoop", {
    body: data.body || "", tag: data.tag, renotify: !!data.tag, data: { url: data.url || "/my" }
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var target = new URL((event.notification.data || {}).url || "/my", self.location.origin);
  if (target.origin !== self.location.origin) target = new URL("/my", self.location.origin);
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (list) {
    for (var i = 0; i < list.length; i++) {
      if (new URL(list[i].url).pathname === target.pathname && "focus" in list[i]) {
        return list[i].navigate(target.href).then(function (c) { return c && c.focus(); });
      }
    }
    return self.clients.openWindow(target.href);
  }));
});
