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
  var STALE_GRACE_MS = 1000;   // network jitter allowed on top of the ping interval
  var MIN_APPLY_GAP_MS = 100;  // at most 10 DOM updates a second

  var main = null;
  var indicator = null;
  var socket = null;        // the current WebSocket (from htmx:wsOpen)
  var wrapper = null;       // htmx's socket wrapper (send, reconnect)
  var attempt = 0;          // reconnects since the last acknowledged subscription
  var paused = false;       // hidden tab: socket closed on purpose
  var state = "connecting";
  var lastPingAt = 0;
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
    state = next;
    indicator.dataset.connectionState = next;
    indicator.querySelector(".connection-label").textContent = label;
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
  }

  // Protocol
  // --------

  function onMessage(message) {
    var topic = topics[message.topic];
    switch (message.type) {
      case "subscribed":
      case "refused":
        if (topic) topic.acked = true;
        if (message.type === "refused") console.warn("live: not allowed to watch " + message.topic);
        if (Object.keys(topics).every(function (n) { return topics[n].acked; })) {
          attempt = 0;
          lastPingAt = now();
          setState("connected", "Live");
        }
        break;
      case "snapshot":
        if (!topic) return;
        topic.seq = message.seq;
        topic.ready = true;
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
        queueFragments(message.html);
        break;
      case "ping":
        lastPingAt = now();
        clockOffset = message.ts * 1000 - now();
        send({ type: "pong", ts: message.ts });
        if (state === "stale") setState("connected", "Live");
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

  function watchHeartbeat() {
    var interval = Number(main.dataset.pingInterval || 5) * 1000;
    if ((state === "connected" || state === "stale") && now() - lastPingAt > interval + STALE_GRACE_MS) {
      var seconds = Math.round((now() - lastPingAt) / 1000);
      setState("stale", seconds + "s ago");
    }
  }

  function updateAges() {
    var serverNow = now() + clockOffset;
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
    setState("connecting", "Connecting…");
  });

  document.addEventListener("htmx:wsOpen", function (event) {
    socket = event.detail.event.target;
    wrapper = event.detail.socketWrapper;
    if (paused) {
      // htmx's own reconnect timer fired while the tab was hidden.
      socket.close(1000, "tab hidden");
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
      setTimeout(function () { if (!paused) retry.reconnect(); }, nextDelay());
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (!main || !wrapper) return;
    if (document.hidden) {
      paused = true;
      if (socket) socket.close(1000, "tab hidden");
    } else if (paused) {
      paused = false;
      attempt = 0;
      wrapper.reconnect();  // a fresh socket subscribes again: fresh snapshots
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-autosubmit]")) event.target.form.submit();
  });

  // Deferred: the document is parsed, and htmx has not connected yet.
  indicator = document.getElementById("connection");
  main = document.querySelector("main[ws-connect]");
  if (main) {
    setInterval(function () { watchHeartbeat(); updateAges(); }, 1000);
    updateAges();
  }

  htmx.config.wsReconnectDelay = function () { return nextDelay(); };

  // For tests and the curious: read-only state plus a way to force a gap.
  window.FleetOpsLive = {
    state: function () { return state; },
    log: log,
    topics: function () { return JSON.parse(JSON.stringify(topics)); },
    forceGap: function (name) { if (topics[name]) topics[name].seq -= 1; },
  };
})();
