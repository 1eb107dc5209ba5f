/*
 * Live updates. The socket only says "something changed": each server event
 * becomes a DOM event "portal:<name>" on <body>, and the fragments that care
 * re-fetch themselves with hx-trigger="portal:<name> from:body".
 * After a dropped connection, "portal:resync" asks every live fragment to refresh.
 */
(function () {
  "use strict";

  // Let htmx swap 422 answers: they carry the form back with its field errors.
  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.responseHandling = [
        { code: "204", swap: false },
        { code: "[23]..", swap: true },
        { code: "422", swap: true },
        { code: "[45]..", swap: false, error: true },
      ];
    }
  });

  if (!document.body || document.body.dataset.live !== "on" || typeof io === "undefined") {
    return;
  }

  var status = document.getElementById("live-status");
  var labels = {
    live: "Live updates on",
    connecting: "Connecting to live updates…",
    offline: "Live updates paused — reconnecting",
  };
  var icons = { live: "●", connecting: "◌", offline: "○" };
  function setState(state) {
    if (!status) return;
    status.dataset.state = state;
    status.querySelector(".live-dot").textContent = icons[state];
    status.querySelector(".live-text").textContent = status.dataset["label" + state[0].toUpperCase() + state.slice(1)] || labels[state];
  }

  function fire(name, detail) {
    document.body.dispatchEvent(new CustomEvent("portal:" + name, { detail: detail || {}, bubbles: true }));
  }

  var socket = io({ transports: ["websocket", "polling"], withCredentials: true });
  var everConnected = false;
  socket.on("connect", function () {
    setState("live");
    if (everConnected) fire("resync");
    everConnected = true;
  });
  socket.on("disconnect", function () { setState("offline"); });
  socket.on("connect_error", function () { setState("offline"); });
  // Busy partners' clicks arrive every flush of the click writer; a dashboard needs
  // at most one refresh every few seconds. First event at once, then at most one
  // per period, and always one after the last event so nothing is left out.
  var COALESCE_MS = { stats: 3000 };
  var held = {};
  function fireCoalesced(name, payload) {
    var period = COALESCE_MS[name];
    if (!period) { fire(name, payload); return; }
    var state = held[name];
    if (state) { state.pending = true; return; }
    fire(name, payload);
    held[name] = state = { pending: false };
    (function wait() {
      setTimeout(function () {
        if (state.pending) {
          state.pending = false;
          fire(name, payload);
          wait();
        } else {
          delete held[name];
        }
      }, period);
    })();
  }
  socket.onAny(function (name, payload) { fireCoalesced(name, payload); });
  window.portalSocket = socket;
})();

/* Copy buttons: <button data-copy="#input-id">. */
document.addEventListener("click", function (event) {
  var button = event.target.closest("[data-copy]");
  if (!button) return;
  var input = document.querySelector(button.dataset.copy);
  if (!input) return;
  input.select();
  var done = function () {
    var original = button.textContent;
    button.textContent = button.dataset.copied || "Copied ✔";
    setTimeout(function () { button.textContent = original; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});

/* Onboarding: a copy button or a download with data-record="<url>" tells the portal the
   partner grabbed their link or a creative (a POST with the page's CSRF token; fire and forget). */
document.addEventListener("click", function (event) {
  var source = event.target.closest("[data-record]");
  if (!source || source.dataset.recorded) return;
  source.dataset.recorded = "yes";
  var headers = {};
  try { headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}"); } catch (e) { headers = {}; }
  fetch(source.dataset.record, { method: "POST", headers: headers, credentials: "same-origin", keepalive: true })
    .catch(function () { delete source.dataset.recorded; });
});
