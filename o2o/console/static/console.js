/* Console behaviour that needs a browser: SLA countdowns and a polite board refresh.
   No inline scripts anywhere (the CSP forbids them); everything hooks in from here. */
(function () {
  "use strict";

  // Server clock minus client clock, so a tablet with a wrong clock still counts correctly.
  var skewMs = 0;

  function readSkew(root) {
    var el = (root || document).querySelector("[data-server-now]");
    if (!el) return;
    var server = Date.parse(el.getAttribute("data-server-now"));
    if (!isNaN(server)) skewMs = server - Date.now();
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  // The words come from the page (data-left, data-overdue: "{time} left" in the page's language).
  function formatRemaining(ms, el) {
    var late = ms < 0;
    var total = Math.floor(Math.abs(ms) / 1000);
    var h = Math.floor(total / 3600);
    var m = Math.floor((total % 3600) / 60);
    var s = total % 60;
    var text = h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
    var pattern = el.getAttribute(late ? "data-overdue" : "data-left") || (late ? "{time} overdue" : "{time} left");
    return pattern.replace("{time}", text);
  }

  function tick() {
    var now = Date.now() + skewMs;
    var items = document.querySelectorAll("[data-deadline]");
    for (var i = 0; i < items.length; i++) {
      var el = items[i];
      var deadline = Date.parse(el.getAttribute("data-deadline"));
      if (isNaN(deadline)) continue;
      var ms = deadline - now;
      el.textContent = formatRemaining(ms, el);
      el.classList.toggle("countdown--late", ms < 0);
      var card = el.closest(".order");
      if (card) card.classList.toggle("order--overdue", ms < 0);
    }
  }

  // Skip a periodic refresh while someone is typing in the board (a pickup code would be lost).
  function boardBusy(board) {
    var active = document.activeElement;
    if (active && board.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      return true;
    }
    var inputs = board.querySelectorAll("input[name=pickup_code]");
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].value) return true;
    }
    return false;
  }

  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (elt && elt.id === "board" && evt.detail.requestConfig &&
        evt.detail.requestConfig.verb === "get" && boardBusy(elt)) {
      evt.preventDefault();
    }
  });

  document.addEventListener("htmx:afterSwap", function () {
    readSkew();
    tick();
  });

  document.addEventListener("DOMContentLoaded", function () {
    readSkew();
    tick();
    window.setInterval(tick, 1000);
  });

  window.o2oConsole = { formatRemaining: formatRemaining, tick: tick };
})();
