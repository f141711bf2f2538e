// FleetOps Live: subscribe a live page's socket to its topics and show the
// connection state in the header (data-connection-state is read by tests
// and monitoring). The full protocol (sequence numbers, heartbeat, the
// reconnect schedule) builds on this.
(function () {
  "use strict";
  function indicator(state, label) {
    var el = document.getElementById("connection");
    if (!el) return;
    el.dataset.connectionState = state;
    el.querySelector(".connection-label").textContent = label;
  }
  document.addEventListener("htmx:wsConnecting", function () { indicator("connecting", "Connecting…"); });
  document.addEventListener("htmx:wsOpen", function (event) {
    var topics = (event.target.dataset.liveTopics || "").split(/\s+/).filter(Boolean);
    event.detail.socketWrapper.send(JSON.stringify({ type: "subscribe", topics: topics }), event.target);
  });
  document.addEventListener("htmx:wsBeforeMessage", function (event) {
    var text = event.detail.message;
    if (text.charAt(0) !== "{") return;  // HTML fragments go on to htmx
    event.preventDefault();
    var message = JSON.parse(text);
    if (message.type === "subscribed") indicator("connected", "Live");
  });
  document.addEventListener("htmx:wsClose", function () { indicator("disconnected", "Disconnected"); });
})();
