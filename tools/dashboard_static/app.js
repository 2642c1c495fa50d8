// The plugpay dashboard: /stream (server-sent events, starting with a snapshot); at most one
// render per animation frame and per RENDER_EVERY_MS, whatever the message rate, and a render
// rebuilds only the sections whose data changed (the page must not slow the ledger it
// watches: it shares the machine with the replicas). Every value
// from the server is set as text, never parsed as HTML: regions and details come from the
// ledger, which anyone writes to.
"use strict";

const state = { replicas: [], blocks: [], events: [], view: null, sessions: {}, problem: null, title: "",
  shown: { blocks: 30, events: 80 } };  // how many blocks and events the page keeps: the server says
window.plugpayShown = {};   // block height -> Date.now() when its row was on screen (for benchmarks)
// window.plugpayFirstRender: ms from navigation to the first render with the server's data
window.plugpayRenders = 0;
const dirty = new Set();  // sections to render: "top", "sessions", "replicas", "open", "chain"
const SECTIONS = ["top", "sessions", "replicas", "open", "chain"];

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const cell of cells) {
    if (cell instanceof Node) { const td = el("td"); td.appendChild(cell); tr.appendChild(td); }
    else if (Array.isArray(cell)) tr.appendChild(el("td", cell[0], cell[1]));
    else tr.appendChild(el("td", cell));
  }
  return tr;
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function short(hex) { return hex ? hex.slice(0, 16) : "-"; }

function bar(value, limit, label, cls) {
  const outer = el("div", null, "bar " + (cls || ""));
  const inner = el("div");
  const ratio = limit > 0 ? Math.min(1, Math.max(0, value / limit)) : (value > 0 ? 1 : 0);
  inner.style.width = (100 * ratio).toFixed(1) + "%";
  outer.appendChild(inner);
  outer.appendChild(el("span", label));
  if (value > limit) outer.classList.add("over");
  return outer;
}

function renderSessions() {
  const box = document.getElementById("sessions");
  const sessions = Object.values(state.sessions);
  document.getElementById("no-sessions").hidden = sessions.length > 0;
  box.replaceChildren(...sessions.map((s) => {
    const card = el("div", null, "session");
    card.dataset.key = s.key;
    card.appendChild(el("h3", s.title + " - " + s.status));
    for (const side of s.sides) {
      const line = el("div", null, "side");
      line.dataset.role = side.role;
      line.appendChild(el("div", side.name + " (" + side.role + "): " + side.state));
      line.appendChild(bar(side.energy_wh, s.energy_target_wh, side.energy_wh + " / " + s.energy_target_wh + " Wh"));
      line.appendChild(bar(side.paid, s.installments, side.paid + " / " + s.installments + " installments"));
      line.appendChild(bar(side.exposure, Math.max(side.bound, 1),
        "exposure " + side.exposure + " (max " + side.max_exposure + ", bound " + side.bound + ")", "exposure"));
      card.appendChild(line);
    }
    if (s.onchain.length) {
      card.appendChild(el("div", "on the ledger: " + s.onchain.map((t) => t.op + " " + t.id).join(", "), "onchain"));
    }
    return card;
  }));
}

function renderReplicas() {
  fill("replicas", state.replicas.map((r) => r.reachable
    ? row([r.id, r.address, r.role, r.view, r.height, r.stable_checkpoint, r.pending, r.dropped])
    : row([r.id, r.address, "unreachable", "-", "-", "-", "-", "-"], "down")));
}

function renderTip() {
  const heights = state.replicas.filter((r) => r.reachable).map((r) => r.height);
  const tip = state.blocks.length ? state.blocks[state.blocks.length - 1].height : (heights.length ? Math.max(...heights) : "-");
  document.getElementById("tip").textContent = "height " + tip;
}

function renderOpen() {
  const v = state.view;
  if (!v) return;
  document.getElementById("market-count").textContent = "(" + v.market_count + ")";
  document.getElementById("channel-count").textContent = "(" + v.channel_count + ", " + v.locked_in_channels + " locked)";
  document.getElementById("htlc-count").textContent = "(" + v.htlc_count + ", " + v.locked_in_htlcs + " locked)";
  fill("market", v.market.map((m) => row([[short(m.request), "id"], m.region, m.energy_wh, m.bid_deadline,
    m.bids.map((b) => b.unit_price).join(", ") || "none yet"])));
  fill("channels", v.channels.map((c) => row([[short(c.channel), "id"], c.collateral, c.paid_to_producer,
    c.installments, c.status, c.deadline === null ? c.window + " blocks once disputed"
      : "ends at " + c.deadline + " (" + Math.max(0, c.deadline - v.height) + " blocks left)"])));
  fill("htlcs", v.htlcs.map((h) => row([[short(h.htlc), "id"], h.amount, h.timeout,
    h.timeout > v.height ? (h.timeout - v.height) + " blocks to timeout" : "expired: refundable"])));
}

function blockRow(b) {
  return row([b.height, b.time || "-", b.requests, b.refused,
    Object.entries(b.kinds).map(([k, n]) => n + " " + k).join(", "), [short(b.hash), "id"]]);
}

function eventRow(e) {
  return row([e.height, e.kind, [e.id, "id"],
    e.ok ? "OK" : (e.result || "not run") + (e.detail ? ": " + e.detail : "")], e.ok ? "" : "refused");
}

// Newest first; only rows not on screen yet are built, the oldest dropped: a render at
// saturation adds a few blocks instead of rebuilding the tables.
const onScreen = { blocks: [], events: [] };

function follow(id, items, make) {
  const body = document.querySelector("#" + id + " tbody");
  const shown = onScreen[id];
  const kept = shown.length ? items.indexOf(shown[shown.length - 1]) : -1;
  if (kept < 0 || shown.length > items.length) {  // a snapshot, or nothing shown yet
    body.replaceChildren(...items.slice().reverse().map(make));
  } else {
    const fresh = items.slice(kept + 1);
    if (fresh.length) body.prepend(...fresh.reverse().map(make));
    while (body.rows.length > items.length) body.lastChild.remove();
  }
  onScreen[id] = items.slice();
}

function renderChain() {
  follow("blocks", state.blocks, blockRow);
  follow("events", state.events, eventRow);
}

function renderTop() {
  document.getElementById("title").textContent = state.title || "plugpay";
  const problem = document.getElementById("problem");
  problem.hidden = !state.problem;
  problem.textContent = state.problem || "";
}

const RENDERERS = { top: renderTop, sessions: renderSessions, replicas: renderReplicas, open: renderOpen,
  chain: renderChain };

function render() {
  for (const section of SECTIONS) if (dirty.has(section)) RENDERERS[section]();
  if (dirty.has("chain") || dirty.has("replicas")) renderTip();
  dirty.clear();
  const now = Date.now();
  for (const b of state.blocks) if (!(b.height in window.plugpayShown)) window.plugpayShown[b.height] = now;
  window.plugpayRenders += 1;
  if (window.plugpayFirstRender === undefined && state.replicas.length) window.plugpayFirstRender = performance.now();
}

const RENDER_EVERY_MS = 100;  // at most ten renders a second, however fast blocks commit
let lastRender = -RENDER_EVERY_MS;

function changed(...sections) {
  const scheduled = dirty.size > 0;
  for (const section of sections) dirty.add(section);
  if (scheduled) return;
  const wait = Math.max(0, lastRender + RENDER_EVERY_MS - performance.now());
  setTimeout(() => requestAnimationFrame(() => { lastRender = performance.now(); render(); }), wait);
}

function snapshot(s) {
  state.title = s.title;
  state.shown = s.shown;
  state.replicas = s.replicas;
  state.blocks = s.blocks;
  state.events = s.events;
  state.view = s.view;
  state.problem = s.problem;
  state.sessions = {};
  for (const session of s.sessions) state.sessions[session.key] = session;
  document.getElementById("replicas-section").hidden = !s.ledger;
  document.getElementById("open-section").hidden = !s.ledger;
  document.getElementById("chain-section").hidden = !s.ledger;
  changed(...SECTIONS);
}

function connect() {
  const source = new EventSource("/stream");
  const status = document.getElementById("connection");
  source.onopen = () => { status.textContent = "live"; status.className = "pill good"; };
  source.onerror = () => { status.textContent = "reconnecting"; status.className = "pill bad"; };
  source.addEventListener("snapshot", (m) => snapshot(JSON.parse(m.data)));
  source.addEventListener("replicas", (m) => { state.replicas = JSON.parse(m.data); changed("replicas"); });
  source.addEventListener("problem", (m) => { state.problem = JSON.parse(m.data); changed("top"); });
  source.addEventListener("view", (m) => { state.view = JSON.parse(m.data); changed("open"); });
  source.addEventListener("session", (m) => {
    const s = JSON.parse(m.data);
    state.sessions[s.key] = s;
    changed("sessions");
  });
  source.addEventListener("blocks", (m) => {
    // The blocks committed since the last message, and their newest events; a snapshot may
    // already hold some of them.
    const b = JSON.parse(m.data);
    const tip = state.blocks.length ? state.blocks[state.blocks.length - 1].height : 0;
    const fresh = b.blocks.filter((block) => block.height > tip);
    if (!fresh.length) return;
    const first = fresh[0].height;
    state.blocks.push(...fresh);
    if (state.blocks.length > state.shown.blocks) state.blocks.splice(0, state.blocks.length - state.shown.blocks);
    state.events.push(...b.events.filter((e) => e.height >= first));
    if (state.events.length > state.shown.events) state.events.splice(0, state.events.length - state.shown.events);
    changed("chain");
  });
}

connect();
