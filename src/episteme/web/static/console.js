// Episteme console: progressive enhancement only; every page works without this file.
// It shows local times on hover, and on a live diagnosis session it follows the
// session's NDJSON events, then reloads so the server renders the findings.
"use strict";

(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) el.title = d.toLocaleString();
    });
  }

  function show(list, event) {
    var item = document.createElement("li");
    item.className = "event " + event.type;
    var time = document.createElement("time");
    time.dateTime = event.at;
    time.textContent = String(event.at).slice(0, 19).replace("T", " ") + "Z";
    var kind = document.createElement("span");
    kind.className = "type";
    kind.textContent = event.type;
    var line = document.createElement("span");
    line.className = "line";
    line.textContent = event.line;
    item.append(time, " ", kind, " ", line);
    list.append(item);
    localTimes(item);
    // The session's state follows its events; an error without a number is the
    // reader's (a revoked token, a stopping server), and leaves the state as it was.
    var status = document.getElementById("status");
    var own = event.n !== undefined;
    if (status && own && event.type !== "text") status.textContent = event.type.replace(/_/g, " ");
  }

  // The server ends the stream once the session has ended and its last event is sent,
  // so a stream that ends cleanly means: reload, and let the server render the outcome.
  async function follow(list) {
    var note = document.getElementById("live-status");
    try {
      var response = await fetch(list.dataset.follow, {
        credentials: "same-origin",
        headers: { Accept: "application/x-ndjson" },
      });
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        var cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          var text = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 1);
          if (!text) continue;
          var event = JSON.parse(text);
          show(list, event);
          // An error without a number is the reader's, not the session's: the server
          // is stopping, or the token is no longer valid. Reloading would not help.
          if (event.type === "error" && event.n === undefined) {
            if (note) note.textContent = "Live updates stopped: " + event.message;
            return;
          }
        }
      }
    } catch (err) {
      if (note) note.textContent = "Live updates stopped (" + err.message + "): reload the page.";
      return;
    }
    window.location.reload();
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var list = document.querySelector("[data-follow]");
    if (list) follow(list);
  });
})();
