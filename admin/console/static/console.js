// dispatchd console: the wallboard's live updates (server-sent events). No library.
"use strict";
(function () {
  const board = document.getElementById("board");
  if (!board) return;
  const status = document.getElementById("live-status");
  const url = board.dataset.live;
  let source = null;

  function say(text) { if (status) status.textContent = text; }

  function connect() {
    source = new EventSource(url);
    source.addEventListener("open", function () { say("Live"); });
    source.addEventListener("board", function (e) {
      const data = JSON.parse(e.data);
      board.innerHTML = data.html;
      board.dataset.version = String(data.version);
      say("Live · updated " + new Date().toLocaleTimeString());
    });
    source.addEventListener("status", function (e) { say(e.data); });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) { say("Reconnecting…"); return; }
      // closed for good (the server answered an error): signed out, or a server error?
      say("Reconnecting…");
      fetch(window.location.href, { redirect: "manual", credentials: "same-origin" })
        .then(function (r) {
          if (r.type === "opaqueredirect" || r.status === 401) { window.location.reload(); }
          else { setTimeout(connect, 2000); }
        })
        .catch(function () { setTimeout(connect, 2000); });
    });
  }
  connect();
})();
