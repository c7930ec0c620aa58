// MoEDesk console: live updates over a websocket + keyboard shortcuts. No build step.
// Events only say *what changed*; each [data-live] region re-fetches its own HTML over HTTP,
// so every byte shown went through the normal permission-checked views.
(function () {
  "use strict";
  const received = (window.__moedeskEvents = []);  // read by browser tests and benchmarks/console.py

  function refresh(el) {
    // At most one request in flight per region; events arriving meanwhile cause one more refresh.
    if (el._busy) { el._dirty = true; return; }
    // Never replace a field the operator is typing in (a draft being edited, approval arguments):
    // refresh once they leave it.
    const active = document.activeElement;
    if (active && el.contains(active) && (active.tagName === "TEXTAREA" || active.tagName === "INPUT")) {
      if (!el._waitingBlur) {
        el._waitingBlur = true;
        active.addEventListener("blur", () => { el._waitingBlur = false; refresh(el); }, { once: true });
      }
      return;
    }
    el._busy = true;
    let url = el.dataset.live;
    if (el.hasAttribute("data-live-search")) url += window.location.search;
    const done = () => {
      el._busy = false;
      if (el._dirty) { el._dirty = false; refresh(el); }
      document.body.dispatchEvent(new CustomEvent("moedesk:refreshed", { detail: { id: el.id } }));
    };
    // source: el gives each region its own request slot; the default source (body) is shared, and
    // htmx would drop or replace concurrent requests from one source.
    htmx.ajax("GET", url, { source: el, target: el, swap: "innerHTML" }).then(done, done);
  }

  function onEvent(msg) {
    received.push({ kind: msg.kind, ticket_id: msg.ticket_id, data: msg.data, at: performance.timeOrigin + performance.now() });
    document.querySelectorAll("[data-live]").forEach((el) => {
      const kinds = el.dataset.liveKinds;  // optional comma-separated prefix filter
      if (kinds && !kinds.split(",").some((k) => msg.kind.startsWith(k))) return;
      refresh(el);
    });
    document.body.dispatchEvent(new CustomEvent("moedesk:event", { detail: msg }));
  }

  function connect(path, attempt) {
    const badge = document.getElementById("live");
    const proto = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + window.location.host + path);
    ws.onopen = () => {
      attempt = 0;
      if (badge) { badge.className = "live on"; badge.title = "live updates connected"; }
      window.__moedeskSocketOpen = true;
    };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === "event") onEvent(msg);
    };
    ws.onclose = (e) => {
      window.__moedeskSocketOpen = false;
      if (badge) { badge.className = "live off"; badge.title = "not live (" + e.code + ")"; }
      if (e.code === 4401 || e.code === 4403 || e.code === 4404) return;  // refused: do not hammer
      const delay = Math.min(10000, 500 * 2 ** attempt);
      setTimeout(() => {
        // A reconnect may have missed events: refresh everything once it is back.
        connect(path, attempt + 1);
        document.querySelectorAll("[data-live]").forEach(refresh);
      }, delay);
    };
  }

  // Plotly figures embedded as <script type="application/json" data-plot="target-id">.
  function drawPlots(root) {
    if (!window.Plotly) return;
    root.querySelectorAll("script[data-plot]").forEach((s) => {
      const el = document.getElementById(s.dataset.plot);
      if (!el) return;
      const fig = JSON.parse(s.textContent);
      Plotly.react(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
      el.dataset.drawn = "1";
    });
  }

  // Keyboard shortcuts -------------------------------------------------------
  let selected = -1;
  let pendingG = false;
  function rows() { return Array.from(document.querySelectorAll("tr.ticket-row")); }
  function select(i) {
    const r = rows();
    if (!r.length) return;
    selected = Math.max(0, Math.min(r.length - 1, i));
    r.forEach((row, j) => row.classList.toggle("selected", j === selected));
    r[selected].scrollIntoView({ block: "nearest" });
  }
  function typing(e) {
    const t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  document.addEventListener("keydown", (e) => {
    const help = document.getElementById("shortcuts");
    if (e.key === "Escape") { if (help) help.hidden = true; if (typing(e)) e.target.blur(); return; }
    if (typing(e) || e.metaKey || e.ctrlKey || e.altKey) return;
    const page = document.body.dataset.page;
    if (pendingG) {
      pendingG = false;
      if (e.key === "i") { window.location = "/console/"; return; }
    }
    if (e.key === "g") { pendingG = true; return; }
    if (e.key === "?") { if (help) help.hidden = !help.hidden; return; }
    if (page === "inbox") {
      if (e.key === "j") { select(selected + 1); e.preventDefault(); }
      else if (e.key === "k") { select(selected - 1); e.preventDefault(); }
      else if ((e.key === "o" || e.key === "Enter") && selected >= 0) { window.location = rows()[selected].dataset.href; }
      else if (e.key === "/") { const q = document.getElementById("id_q"); if (q) { q.focus(); e.preventDefault(); } }
      else if (e.key === "r") { document.querySelectorAll("[data-live]").forEach(refresh); }
    } else if (page === "ticket") {
      const focus = (id) => { const el = document.getElementById(id); if (el) { el.focus(); e.preventDefault(); } };
      if (e.key === "n") focus("note-body");
      else if (e.key === "d") { const d = document.querySelector("textarea[data-draft]"); if (d) { d.focus(); e.preventDefault(); } }
      else if (e.key === "a") { const b = document.querySelector("[data-shortcut=approve]"); if (b) b.click(); }
      else if (e.key === "u") { window.location = "/console/"; }
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    const path = document.body.dataset.ws;
    if (path) {
      // The badge only on pages that update live; a page without a socket is not "not live".
      const badge = document.getElementById("live");
      if (badge) badge.hidden = false;
      connect(path, 0);
    }
    drawPlots(document);
    // Edits survive live refreshes: fields whose value differs from what the server rendered are
    // stashed before a swap and put back after it (matched by id, which names the record).
    let stash = {};
    document.body.addEventListener("htmx:beforeSwap", (e) => {
      stash = {};
      e.detail.target.querySelectorAll("textarea[id], input[id]").forEach((f) => {
        if (f.type !== "hidden" && f.value !== f.defaultValue) stash[f.id] = f.value;
      });
    });
    document.body.addEventListener("htmx:afterSwap", () => {
      for (const [id, value] of Object.entries(stash)) {
        const f = document.getElementById(id);
        if (f) f.value = value;
      }
      stash = {};
    });
    // Our own POST actions answer with HX-Trigger: moedesk-refresh, so the actor's screen updates
    // even before (or without) the websocket event.
    document.body.addEventListener("moedesk-refresh", () => document.querySelectorAll("[data-live]").forEach(refresh));
    // Plots are drawn after htmx's settle step: while settling, htmx puts the old element's
    // attributes (Plotly's "js-plotly-plot" class among them) on the new one and then removes
    // them, which would strip the class Plotly's own CSS hangs on.
    document.body.addEventListener("htmx:afterSettle", (e) => drawPlots(e.detail.target));
    document.body.addEventListener("htmx:afterSwap", (e) => {
      if (document.body.dataset.page === "inbox" && selected >= 0) { select(selected); }
      const q = document.getElementById("save-view-query");
      if (q) q.value = window.location.search.replace(/^\?/, "");
    });
    // Clicking anywhere on an inbox row opens it.
    document.body.addEventListener("click", (e) => {
      const row = e.target.closest && e.target.closest("tr.ticket-row");
      if (row && !e.target.closest("a,button,input")) window.location = row.dataset.href;
    });
  });
})();
