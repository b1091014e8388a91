// herald console: the admin API, the subscriptions API and the hub, from
// the page's own origin. Event streams are read with fetch, not
// EventSource, so that the token goes in the Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { hub: "/.well-known/mercure", token: sessionStorage.getItem("herald-token") || "", subs: new Map() };

function setStatus(text, ok) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (ok ? "ok" : "bad");
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (!res.ok) {
    const msg = (await res.text()).trim();
    throw new Error(res.status + " " + (msg || res.statusText));
  }
  return res;
}

// readEvents reads an event stream and calls onEvent for each event, with
// its id, type and data; it returns when the stream ends.
async function readEvents(res, onEvent, signal) {
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  let ev = { id: "", type: "", data: [] };
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (ev.data.length) onEvent({ id: ev.id, type: ev.type || "message", data: ev.data.join("\n") });
        ev = { id: ev.id, type: "", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let v = i < 0 ? "" : line.slice(i + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "data") ev.data.push(v);
      else if (field === "id") ev.id = v;
      else if (field === "event") ev.type = v;
    }
  }
}

// follow subscribes to query and keeps the subscription up, resuming from
// the last event id after a cut; it returns a function that stops it.
function follow(query, onEvent, onState, cursor) {
  const ctl = new AbortController();
  let last = cursor || "";
  (async () => {
    while (!ctl.signal.aborted) {
      try {
        const q = new URLSearchParams(query);
        const headers = {};
        if (last) headers["Last-Event-ID"] = last;
        const res = await api(state.hub + "?" + q.toString(), { headers, signal: ctl.signal });
        onState(true, last);
        await readEvents(res, (e) => { if (e.id) last = e.id; onEvent(e, last); }, ctl.signal);
      } catch (err) {
        if (ctl.signal.aborted) return;
        onState(false, last, err);
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => ctl.abort();
}

// --- nodes ---------------------------------------------------------------

function spark(values) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 100 34");
  svg.setAttribute("preserveAspectRatio", "none");
  const vs = values.slice(-180);
  if (vs.length < 2) return svg;
  const max = Math.max(1, ...vs);
  const pts = vs.map((v, i) => [(i / (vs.length - 1)) * 100, 32 - (v / max) * 30]);
  const line = pts.map((p) => p[0].toFixed(2) + "," + p[1].toFixed(2)).join(" ");
  const area = document.createElementNS(svg.namespaceURI, "polygon");
  area.setAttribute("points", "0,34 " + line + " 100,34");
  const pl = document.createElementNS(svg.namespaceURI, "polyline");
  pl.setAttribute("points", line);
  svg.append(area, pl);
  return svg;
}

function fmt(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function uptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + Math.floor(s % 60) + "s";
}

function renderNodes(nodes) {
  const box = $("nodes");
  box.replaceChildren();
  for (const n of nodes) {
    const card = document.createElement("article");
    card.className = n.alive === false ? "node down" : "node";
    const h = document.createElement("h3");
    h.textContent = n.name;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = (n.alive === false ? "lease ran out · " : "") + n.version + " · up " + uptime(n.uptime_s);
    const figs = document.createElement("div");
    figs.className = "figures";
    const s = n.series || {};
    for (const [label, value, series] of [
      ["subscribers", n.subscribers, s.subscribers || []],
      ["connections", n.connections, s.connections || []],
      ["publishes/s", n.publishes_per_s, s.publishes_per_s || []],
      ["deliveries/s", n.deliveries_per_s, s.deliveries_per_s || []],
    ]) {
      const f = document.createElement("div");
      f.className = "figure";
      const l = document.createElement("span");
      l.className = "label";
      l.textContent = label;
      const v = document.createElement("span");
      v.className = "value";
      v.textContent = value < 0 ? "—" : fmt(value);
      f.append(l, v, spark(series));
      figs.append(f);
    }
    card.append(h, meta, figs);
    box.append(card);
  }
}

async function pollNodes() {
  try {
    const res = await api("/admin/nodes");
    renderNodes((await res.json()).nodes);
    setStatus("live", true);
  } catch (err) {
    setStatus(err.message, false);
  }
}

// --- active subscriptions ---------------------------------------------------

function renderSubs() {
  const ul = $("subs");
  ul.replaceChildren();
  const rows = [...state.subs.values()].sort((a, b) => a.id.localeCompare(b.id));
  for (const d of rows) {
    const li = document.createElement("li");
    li.dataset.id = d.id;
    if (d.fresh) li.className = "fresh";
    const m = document.createElement("code");
    m.textContent = d.match || d.topic;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = (d.match_type || "selector") + " · " + d.subscriber + (d.payload ? " · " + JSON.stringify(d.payload) : "");
    li.append(m, meta);
    ul.append(li);
    d.fresh = false;
  }
  $("subs-count").textContent = String(rows.length);
}

async function startSubs(enabled) {
  if (!enabled) {
    const note = $("subs-note");
    note.hidden = false;
    note.textContent = "Start herald with --subscriptions to see who is listening.";
    return;
  }
  let cursor = "";
  for (let next = state.hub + "/subscriptions?limit=1000"; next; ) {
    const res = await api(next);
    const m = /last-event-id="([^"]*)"/.exec(res.headers.get("Link") || "");
    if (m && !cursor) cursor = m[1];
    const doc = await res.json();
    for (const d of doc.subscriptions) state.subs.set(d.id, d);
    next = doc.next || "";
  }
  renderSubs();
  follow({ match_urlpattern: state.hub + "/subscriptions/*" }, (e) => {
    let d;
    try { d = JSON.parse(e.data); } catch { return; }
    if (!d.id || !("active" in d)) return;
    if (d.active) { d.fresh = true; state.subs.set(d.id, d); } else state.subs.delete(d.id);
    renderSubs();
  }, () => {}, cursor);
}

// --- publish -------------------------------------------------------------

$("publish").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = new URLSearchParams({ topic: $("pub-topic").value, data: $("pub-data").value });
  if ($("pub-type").value) body.set("type", $("pub-type").value);
  if ($("pub-private").checked) body.set("private", "on");
  const out = $("pub-result");
  try {
    const res = await api(state.hub, { method: "POST", body });
    out.textContent = "Published " + (await res.text()).trim();
  } catch (err) {
    out.textContent = "Refused: " + err.message;
  }
});

// --- subscribe -------------------------------------------------------------

let stopStream = null;
$("subscribe").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (stopStream) stopStream();
  $("events").replaceChildren();
  $("sub-stop").disabled = false;
  stopStream = follow({ match: $("sub-topic").value }, (e, last) => {
    const li = document.createElement("li");
    li.className = "fresh";
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = new Date().toLocaleTimeString() + " · " + e.type + " · " + e.id;
    const pre = document.createElement("pre");
    pre.textContent = e.data;
    li.append(meta, pre);
    $("events").prepend(li);
    $("sub-cursor").textContent = last || "—";
  }, (ok, last, err) => {
    $("sub-cursor").textContent = (last || "—") + (ok ? "" : " (reconnecting: " + (err ? err.message : "cut") + ")");
  });
});
$("sub-stop").addEventListener("click", () => {
  if (stopStream) stopStream();
  stopStream = null;
  $("sub-stop").disabled = true;
});

// --- start -------------------------------------------------------------

$("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("herald-token", state.token);
  location.reload();
});

(async () => {
  const cfg = await (await fetch("config.json")).json();
  state.hub = cfg.hub;
  if (!state.token && cfg.dev) {
    try { state.token = (await (await fetch("token")).json()).token; } catch { /* stays empty */ }
  }
  if (cfg.dev) $("auth").hidden = true;
  await pollNodes();
  setInterval(pollNodes, 2000);
  try { await startSubs(cfg.subscriptions); } catch (err) { $("subs-note").hidden = false; $("subs-note").textContent = err.message; }
})();
