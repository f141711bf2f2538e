// FleetOps Live: the live protocol on top of htmx's WebSocket extension.
//
// htmx's ws extension owns the socket; this script owns the protocol:
// subscribing to the page's topics, sequence numbers with resync on a gap,
// the heartbeat, the connection indicator (data-connection-state is read by
// tests and monitoring), the reconnect schedule, pausing hidden tabs, and
// applying fragments to the DOM at most 10 times a second.
(function () {
  "use strict";

  // Reconnect delays in ms: immediate, 2 s, 5 s, 10 s, then every 30 s.
  var SCHEDULE = [0, 2000, 5000, 10000, 30000];
  // htmx's extension reconnects by itself only after these close codes.
  var EXTENSION_RECONNECTS = [1006, 1011, 1012, 1013];
  // The server's "your session is over" (logout, deactivated, new password):
  // reconnecting could only be refused again, so the page says so and stops.
  var CLOSE_SIGNED_OUT = 4401;
  var STALE_GRACE_MS = 500;    // network jitter allowed on top of the ping interval
  var HEARTBEAT_CHECK_MS = 250; // so STALE shows within 6 s of the last ping, not 7
  var DEAD_AFTER_PINGS = 2;    // missed pings (plus the pong timeout) before the link counts as dead
  var MIN_APPLY_GAP_MS = 100;  // at most 10 DOM updates a second

  var main = null;
  var indicator = null;
  var socket = null;        // the current WebSocket (from htmx:wsOpen)
  var wrapper = null;       // htmx's socket wrapper (send, reconnect)
  var attempt = 0;          // reconnects since the last acknowledged subscription
  var paused = false;       // hidden tab: socket closed on purpose
  var state = "connecting";
  var lastPingAt = 0;
  var lastDataAt = now();   // the page's data is as old as this (server-rendered at load)
  var lost = false;         // the link went down since the page loaded
  var signedOut = false;    // the server closed 4401: never reconnect
  var denied = [];          // topics the user may no longer watch (revoked or refused)
  var clockOffset = 0;      // server time - browser time, from pings
  var topics = {};          // name -> {seq, ready, acked}
  var pending = {};         // region id -> html, applied by flush()
  var pendingOrder = [];
  var flushTimer = null;
  var lastFlushAt = 0;
  var log = [];

  function now() { return Date.now(); }

  function setState(next, label) {
    if (!indicator) return;
    if (state !== next) log.push({ state: next, at: now(), attempt: attempt });
    if (next === "disconnected") lost = true;
    state = next;
    indicator.dataset.connectionState = next;
    indicator.querySelector(".connection-label").textContent = label;
    showFreshness();
  }

  function allTopicsReady() {
    return Object.keys(topics).every(function (n) { return topics[n].acked && topics[n].ready; });
  }

  // What the whole page admits about its data, on <body data-live>:
  // "live"; "stale" (amber band, tinted regions); "down" (red band,
  // desaturated). After a loss the page stays "down" through every
  // reconnect attempt until each topic's fresh snapshot is applied.
  function pageFreshness() {
    if (signedOut || denied.length) return "down";
    if (state === "stale") return "stale";
    if (state === "disconnected") return "down";
    if (lost && !(state === "connected" && allTopicsReady())) return "down";
    return "live";
  }

  function showFreshness() {
    if (!main) return;
    var freshness = pageFreshness();
    document.body.dataset.live = freshness;
    var band = document.getElementById("freshness-band");
    if (!band) return;
    band.hidden = freshness === "live";
    if (freshness === "live") return;
    var seconds = Math.max(0, Math.round((now() - lastDataAt) / 1000));
    var age = "last update " + seconds + " s ago";
    var text = signedOut ? "Signed out — this page no longer updates (" + age + "). Sign in again to see live data."
      : denied.length ? "No longer allowed to watch " + denied.join(", ") + " — this data no longer updates (" + age + ")."
      : (freshness === "down" ? "Not live — " : "") + "Data may be old — " + age;
    band.querySelector(".freshness-text").textContent = text;
  }

  // The server ended this session's sockets: stop every reconnect path.
  function showSignedOut() {
    signedOut = true;
    socket = null;
    topics = {};
    main.dataset.liveEnded = "signed-out";
    setState("signed-out", "Signed out");
  }

  // A topic this page shows may no longer be watched: its data stops, and
  // the page says so instead of waiting for it.
  function showDenied(name) {
    delete topics[name];
    if (denied.indexOf(name) < 0) denied.push(name);
    main.dataset.liveDenied = denied.join(" ");
    if (state === "connected" || state === "stale") setState(state, "No longer allowed");
    else showFreshness();
  }

  function nextDelay() {
    var base = SCHEDULE[Math.min(attempt, SCHEDULE.length - 1)];
    attempt += 1;
    // A little jitter so a restarted server is not hit by every screen at once.
    return base === 0 ? Math.random() * 250 : Math.round(base * (0.9 + Math.random() * 0.2));
  }

  function send(payload) {
    if (wrapper) wrapper.send(JSON.stringify(payload), main);
  }

  function subscribeAll() {
    var names = (main.dataset.liveTopics || "").split(/\s+/).filter(Boolean);
    topics = {};
    names.forEach(function (name) { topics[name] = { seq: -1, ready: false, acked: false }; });
    send({ type: "subscribe", topics: names });
  }

  // DOM updates
  // -----------

  // The regions of a message are sibling elements in one string, and a
  // <template> keeps parsing in the mode its first element set: after the
  // line KPIs (<dl>) the machine rows' <tr> tags were dropped. Rows are
  // therefore also read from a parse inside a table.
  function regionsOf(html) {
    var template = document.createElement("template");
    template.innerHTML = html;
    var elements = Array.prototype.slice.call(template.content.children);
    if (/<tr[\s>]/i.test(html)) {
      var table = document.createElement("template");
      table.innerHTML = "<table><tbody>" + html + "</tbody></table>";
      Array.prototype.forEach.call(table.content.children, function (element) {
        if (element.tagName === "TABLE" && element.tBodies.length) {
          elements = elements.concat(Array.prototype.slice.call(element.tBodies[0].rows));
        }
      });
    }
    return elements;
  }

  function queueFragments(html) {
    regionsOf(html).forEach(function (element) {
      if (!element.id) return;
      if (!(element.id in pending)) pendingOrder.push(element.id);
      pending[element.id] = element.outerHTML;  // the newest version of a region wins
    });
    scheduleFlush();
  }

  function scheduleFlush() {
    if (flushTimer) return;
    var wait = Math.max(0, lastFlushAt + MIN_APPLY_GAP_MS - now());
    flushTimer = setTimeout(flush, wait);
  }

  function flush() {
    flushTimer = null;
    lastFlushAt = now();
    var order = pendingOrder;
    var fragments = pending;
    pending = {};
    pendingOrder = [];
    order.forEach(function (id) {
      var target = document.getElementById(id);
      if (target) htmx.swap(target, fragments[id], { swapStyle: "outerHTML" });
    });
    updateAges();
    showFreshness();
  }

  // Protocol
  // --------

  function onMessage(message) {
    var topic = topics[message.topic];
    switch (message.type) {
      case "refused":
      case "revoked":
        // A page asks only for what it shows, so any refusal means the
        // user may no longer watch it (refused: at a reconnect).
        (message.topics || [message.topic]).forEach(function (name) {
          console.warn("live: " + message.type + " " + name + " (" + message.reason + ")");
          if (name in topics) showDenied(name);
        });
        if (message.type === "revoked") break;
        /* falls through: a refusal answers the subscription too */
      case "subscribed":
        if (topic) topic.acked = true;
        if (message.type === "subscribed" && denied.indexOf(message.topic) >= 0) {
          denied.splice(denied.indexOf(message.topic), 1);  // allowed again since
          main.dataset.liveDenied = denied.join(" ");
        }
        if (Object.keys(topics).every(function (n) { return topics[n].acked; })) {
          attempt = 0;
          lastPingAt = now();
          setState("connected", denied.length ? "No longer allowed" : "Live");
        }
        break;
      case "snapshot":
        if (!topic) return;
        topic.seq = message.seq;
        topic.ready = true;
        lastDataAt = now();
        queueFragments(message.html);
        break;
      case "delta":
        if (!topic || !topic.ready || message.seq <= topic.seq) return;  // before the snapshot, or older
        if (message.seq !== topic.seq + 1) {
          // A delta went missing: ask for a fresh snapshot and wait for it.
          topic.ready = false;
          main.dataset.resyncs = String(Number(main.dataset.resyncs || 0) + 1);
          send({ type: "resync", topic: message.topic });
          return;
        }
        topic.seq = message.seq;
        lastDataAt = now();
        queueFragments(message.html);
        break;
      case "ping":
        lastPingAt = now();
        // A ping proves every topic is current: the server sends deltas
        // before the ping that follows them.
        if (state === "connected" || state === "stale") lastDataAt = now();
        clockOffset = message.ts * 1000 - now();
        send({ type: "pong", ts: message.ts });
        if (state === "stale") setState("connected", denied.length ? "No longer allowed" : "Live");
        break;
      case "toast":
        showToast(message.html);
        break;
      case "error":
        console.warn("live: " + message.error);
        break;
    }
  }

  // Notices for this user (a refused change, a lock taken over by another
  // operator) stay on screen for a while, then go.
  function showToast(html) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var template = document.createElement("template");
    template.innerHTML = html;
    var toast = template.content.firstElementChild;
    if (!toast) return;
    box.appendChild(toast);
    setTimeout(function () { toast.remove(); }, 8000);
  }

  // No ping for an interval: STALE. No ping for two intervals and the
  // pong timeout: the link is dead even if the socket never closed (a
  // half-open TCP link after a cable cut never does), so close it here
  // and let the reconnect schedule run.
  function watchHeartbeat() {
    var interval = Number(main.dataset.pingInterval || 5) * 1000;
    var pongTimeout = Number(main.dataset.pongTimeout || 3) * 1000;
    if (state !== "connected" && state !== "stale") return;
    var silence = now() - lastPingAt;
    if (socket && silence > DEAD_AFTER_PINGS * interval + pongTimeout) {
      abandonSocket();
    } else if (silence > interval + STALE_GRACE_MS) {
      setState("stale", Math.round(silence / 1000) + "s ago");
    }
  }

  function abandonSocket() {
    var dead = socket;
    socket = null;
    // The closing handshake cannot finish over a dead link and the browser
    // may report the close a minute later: detach it now, so that late
    // close neither ends a newer socket nor replays old messages.
    dead.fleetopsAbandoned = true;
    dead.onclose = null;
    dead.onerror = null;
    try { dead.close(4000, "no heartbeat"); } catch (e) { /* already closing */ }
    Object.keys(topics).forEach(function (n) { topics[n].ready = false; });
    setState("disconnected", "Disconnected");
    var retry = wrapper;
    setTimeout(function () { if (!paused && !socket && !signedOut) retry.reconnect(); }, nextDelay());
  }

  // Ages tick here every second and anything whose data is older than the
  // staleness limit takes the stale style by itself, push or no push.
  function markStale(serverNow) {
    var limit = Number(main.dataset.staleAfter || 5) * 1000;
    document.querySelectorAll("[data-seen-at]").forEach(function (element) {
      var seen = Date.parse(element.dataset.seenAt);
      // A region re-rendered only every few seconds may be that much older.
      var grace = Number(element.dataset.staleGrace || 0) * 1000;
      var old = isNaN(seen) || serverNow - seen > limit + grace;
      element.classList.toggle("is-stale", old);
    });
  }

  function updateAges() {
    var serverNow = now() + clockOffset;
    markStale(serverNow);
    document.querySelectorAll("time.age").forEach(function (element) {
      var seconds = Math.max(0, Math.round((serverNow - Date.parse(element.getAttribute("datetime"))) / 1000));
      element.textContent = seconds < 120 ? seconds + " s ago"
        : seconds < 7200 ? Math.round(seconds / 60) + " min ago"
        : Math.round(seconds / 3600) + " h ago";
    });
  }

  // htmx ws extension events
  // ------------------------

  document.addEventListener("htmx:wsConnecting", function () {
    if (!signedOut) setState("connecting", "Connecting…");
  });

  document.addEventListener("htmx:wsOpen", function (event) {
    socket = event.detail.event.target;
    wrapper = event.detail.socketWrapper;
    if (paused || signedOut) {
      // htmx's own reconnect timer fired while the tab was hidden.
      socket.close(1000, signedOut ? "signed out" : "tab hidden");
      return;
    }
    subscribeAll();
  });

  document.addEventListener("htmx:wsBeforeMessage", function (event) {
    event.preventDefault();  // every message is a JSON envelope handled here
    var message;
    try { message = JSON.parse(event.detail.message); } catch (e) { return; }
    onMessage(message);
  });

  document.addEventListener("htmx:wsClose", function (event) {
    if (event.detail.event.target.fleetopsAbandoned || signedOut) return;
    if (event.detail.event.code === CLOSE_SIGNED_OUT) {
      showSignedOut();
      return;
    }
    socket = null;
    Object.keys(topics).forEach(function (n) { topics[n].ready = false; });
    if (paused) {
      setState("disconnected", "Paused");
      return;
    }
    setState("disconnected", "Disconnected");
    var code = event.detail.event.code;
    if (EXTENSION_RECONNECTS.indexOf(code) < 0) {
      // The extension gives up on other codes; keep the schedule anyway.
      var retry = event.detail.socketWrapper;
      setTimeout(function () { if (!paused && !signedOut) retry.reconnect(); }, nextDelay());
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (!main || !wrapper || signedOut) return;
    if (document.hidden) {
      paused = true;
      if (socket) socket.close(1000, "tab hidden");
    } else if (paused) {
      paused = false;
      attempt = 0;
      wrapper.reconnect();  // a fresh socket subscribes again: fresh snapshots
    }
  });

  // An HTMX request that never reached the server (or got no usable
  // answer) must not leave a form looking sent: say so in the form and in
  // a toast.
  function notSent(event, text) {
    var elt = event.detail.elt;
    var form = elt && (elt.closest("form") || elt.querySelector("form"));
    if (form) {
      form.querySelectorAll(".form-sent").forEach(function (sent) { sent.remove(); });
      var box = form.querySelector(".form-not-sent");
      if (!box) {
        box = document.createElement("p");
        box.className = "form-errors form-not-sent";
        box.setAttribute("role", "alert");
        form.appendChild(box);
      }
      box.textContent = text;
    }
    var toast = document.createElement("div");
    toast.className = "toast toast-error";
    toast.setAttribute("role", "alert");
    toast.textContent = text;
    showToast(toast.outerHTML);
  }

  // Only a request that never left the browser is surely not sent; a lost
  // answer or a server error may come after the change was made, and
  // sending again would supersede it.
  var MAYBE_SENT = " The change may have been made: check its pending value before sending again.";

  document.addEventListener("htmx:sendError", function (event) {
    notSent(event, navigator.onLine === false
      ? "Not sent: no connection to the server."
      : "No answer from the server." + MAYBE_SENT);
  });

  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    notSent(event, "The server answered " + status + "." + MAYBE_SENT);
  });

  // A new request clears the last "not sent" notice of its form.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt && event.detail.elt.closest("form");
    if (form) form.querySelectorAll(".form-not-sent").forEach(function (box) { box.remove(); });
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });

  // Deferred: the document is parsed, and htmx has not connected yet.
  indicator = document.getElementById("connection");
  main = document.querySelector("main[ws-connect]");
  if (main) {
    setInterval(watchHeartbeat, HEARTBEAT_CHECK_MS);
    setInterval(function () { updateAges(); showFreshness(); }, 1000);
    updateAges();
  }

  htmx.config.wsReconnectDelay = function () { return nextDelay(); };
  // Our listener comes first on every socket, so messages that arrive on a
  // socket given up for dead (a link that came back) are dropped unseen.
  htmx.createWebSocket = function (url) {
    var ws = new WebSocket(url);
    ws.addEventListener("message", function (event) {
      if (ws.fleetopsAbandoned) event.stopImmediatePropagation();
    });
    return ws;
  };

  // For tests and the curious: read-only state plus a way to force a gap.
  window.FleetOpsLive = {
    state: function () { return state; },
    log: log,
    topics: function () { return JSON.parse(JSON.stringify(topics)); },
    forceGap: function (name) { if (topics[name]) topics[name].seq -= 1; },
  };
})();
