// FleetOps Live: small behaviours of forms and filters (the live protocol
// is live.js).
(function () {
  "use strict";

  // After Back, htmx puts back its copy of the page, whose filter inputs
  // were saved already holding the next search: set them from the address,
  // which is what the restored list applies.
  function filtersFromAddress() {
    var params = new URLSearchParams(location.search);
    document.querySelectorAll("form.filters [name]").forEach(function (el) {
      if (el.type === "checkbox" || el.type === "radio") el.checked = params.getAll(el.name).indexOf(el.value) >= 0;
      else el.value = params.get(el.name) || "";
    });
  }
  document.addEventListener("htmx:historyRestore", filtersFromAddress);
  window.addEventListener("pageshow", filtersFromAddress);

  // "Sent to m:401: pending…" stays only while the machine's values on the
  // page are still pending (optimistic, confirmed or in conflict); once
  // reconciled, failed or expired the line goes.
  var PENDING = ".setpoint.is-optimistic, .setpoint.is-confirmed, .setpoint.is-conflict";
  function clearSettledSent() {
    document.querySelectorAll(".form-sent[data-pending-for]").forEach(function (line) {
      var slug = line.dataset.pendingFor;
      var regions = document.querySelectorAll("#machine-row-" + slug + ", #machine-header-" + slug);
      var pending = Array.prototype.some.call(regions, function (r) { return r.querySelector(PENDING); });
      if (regions.length && !pending) line.remove();
    });
  }

  // The machine page's sensor search: rows whose name or key do not match
  // are hidden, again after every push re-renders a sensor group.
  function filterSensors() {
    var box = document.querySelector("input[data-sensor-search]");
    if (!box) return;
    var words = box.value.trim().toLowerCase();
    var shown = 0;
    document.querySelectorAll("table.sensors tr[data-sensor]").forEach(function (row) {
      var match = !words || row.dataset.sensor.toLowerCase().indexOf(words) >= 0;
      row.hidden = !match;
      shown += match ? 1 : 0;
    });
    document.querySelectorAll(".sensor-group").forEach(function (group) {
      group.hidden = !!words && !group.querySelector("tr[data-sensor]:not([hidden])");
    });
    var count = document.querySelector("[data-sensor-count]");
    if (count) count.textContent = words ? shown + " matching" : "";
  }

  document.addEventListener("input", function (event) {
    if (event.target.matches("input[data-sensor-search]")) filterSensors();
  });
  setInterval(function () { clearSettledSent(); filterSensors(); }, 500);
})();
