// Staff console: keeps the send progress page current without a reload. Without JavaScript the
// page still shows the figures from when it loaded and a link to refresh them.
(function () {
  "use strict";
  var box = document.getElementById("send-progress");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-progress-url");
  var labels = { draft: "Draft", scheduled: "Scheduled", sending: "Sending", paused: "Paused", sent: "Sent", cancelled: "Cancelled" };
  var classes = { draft: "tag tag-grey", scheduled: "tag tag-blue", sending: "tag tag-blue", paused: "tag tag-yellow", sent: "tag tag-green", cancelled: "tag tag-red" };
  var delay = 1000;

  function set(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== String(value)) { el.textContent = String(value); }
  }

  function show(p) {
    var bar = document.getElementById("progress-bar");
    bar.max = p.recipients || 1;
    var stopped = p.status === "cancelled";
    bar.value = stopped ? p.sent + p.failed : p.done;
    bar.classList.toggle("send-progress-stopped", stopped);
    bar.textContent = p.percent + " %";
    set("progress-percent", p.percent);
    set("progress-sent", p.sent);
    set("progress-failed", p.failed);
    set("progress-pending", p.pending);
    set("progress-recipients", p.recipients);
    set("progress-summary", p.summary);
    var status = document.getElementById("progress-status");
    var tag = status.firstElementChild;
    if (tag && tag.textContent !== labels[p.status]) {
      tag.textContent = labels[p.status] || p.status;
      tag.className = classes[p.status] || "tag";
    }
  }

  function finished(p) { return p.status === "cancelled" || (p.status === "sent" && p.pending === 0); }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (p) {
        show(p);
        if (!finished(p)) { window.setTimeout(poll, delay); }
        else { set("progress-refresh", p.status === "cancelled" ? "The send was cancelled." : "Sending has finished."); }
      })
      .catch(function () {
        // Keep the refresh link; try again a little later.
        delay = Math.min(delay * 2, 15000);
        window.setTimeout(poll, delay);
      });
  }

  window.setTimeout(poll, delay);
})();
