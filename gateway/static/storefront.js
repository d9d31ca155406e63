// The demo storefront: a product grid from the catalog, the tracker, and a live
// "recommended for you" panel fed by the gateway's Server-Sent Events stream.
// Clicking a card opens that product (`?item=ID` opens one at load): the panel's stream
// then asks the gateway to leave it out (`exclude=`), so a product never recommends itself.
import { createTracker } from "/v1/tracker.js";

const params = new URLSearchParams(location.search);
const GRID_SIZE = 48;
const byId = new Map();
const byCategory = new Map();
let current = "all";
let tracker = null;
let viewing = params.get("item") || null; // the product in view
let stream = null;
let shown = null; // the last list the panel showed
// What the page saw, for tests and the click-latency benchmark.
const log = (window.__streamrec = { panelLog: [], tracked: [], ready: false, user: null });
window.addEventListener("streamrec:track", (e) => log.tracked.push({ t: performance.now(), event: e.detail }));

const $ = (sel) => document.querySelector(sel);
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

async function session() {
  if (params.get("user") && params.get("token")) return { user_id: params.get("user"), token: params.get("token") };
  const query = params.get("user") ? `?user_id=${encodeURIComponent(params.get("user"))}` : "";
  const r = await fetch(`/demo/session${query}`);
  if (!r.ok) throw new Error("no demo session here: open this page with ?user=ID&token=TOKEN (see `streamrec token ID`)");
  return r.json();
}

function card(item) {
  return el("article", { class: "card", dataset: { itemId: item.item_id, category: item.category || "" } },
    el("span", { class: "cat", textContent: item.category || "" }),
    el("div", { class: "title", textContent: item.title || item.item_id }),
    el("div", { class: "price", textContent: item.price != null ? `€ ${Number(item.price).toFixed(2)}` : "" }),
    el("div", { class: "actions" },
      el("button", { type: "button", textContent: "Add to cart", dataset: { track: "add_to_cart" } }),
      el("button", { type: "button", textContent: "♡ Wishlist", dataset: { track: "wishlist" } })));
}

function gridItems() {
  if (current !== "all") return (byCategory.get(current) || []).slice(0, GRID_SIZE);
  const lists = [...byCategory.values()];
  const out = [];
  for (let i = 0; out.length < GRID_SIZE && lists.some((l) => i < l.length); i++) {
    for (const l of lists) if (i < l.length && out.length < GRID_SIZE) out.push(l[i]);
  }
  return out;
}

function renderGrid() {
  $("#grid").replaceChildren(...gridItems().map(card));
  for (const b of document.querySelectorAll("#categories button")) b.classList.toggle("active", b.dataset.cat === current);
}

function renderNav() {
  const pick = (cat) => () => {
    current = cat;
    renderGrid();
    if (cat !== "all") tracker.track("filter", { category: cat, context: { facets: { category: cat } } });
  };
  const buttons = ["all", ...byCategory.keys()].map((cat) =>
    el("button", { type: "button", textContent: cat, dataset: { cat }, onclick: pick(cat) }));
  $("#categories").replaceChildren(...buttons);
}

// The reason the worker gives each listed item, in words ("because you viewed ...").
function because(reason) {
  if (!reason) return "";
  const named = (id) => (byId.get(id) || { title: id }).title || id;
  switch (reason.kind) {
    case "covis": return reason.because ? `because you viewed ${named(reason.because)}` : "viewed together";
    case "category": return `trending in ${reason.category}`;
    case "session": case "seen": return "you looked at this";
    case "knn": return "in sessions like yours";
    case "segment": return "popular with people like you";
    case "content": return "similar to what you viewed";
    case "mf": return "picked for you";
    case "trending": case "recent": return "popular right now";
    default: return "";
  }
}

function drawRecs(msg) {
  const before = new Set([...document.querySelectorAll("#recs li")].map((li) => li.dataset.itemId));
  const list = $("#recs");
  list.dataset.recId = msg.rec_id || String(msg.seq);
  list.replaceChildren(...msg.items.slice(0, 10).map((r) => {
    const item = byId.get(r.item_id) || { item_id: r.item_id };
    return el("li", { class: before.has(r.item_id) ? "" : "fresh", dataset: { itemId: r.item_id, category: item.category || "" } },
      el("span", { class: "cat", textContent: item.category || "?" }), " ", item.title || r.item_id,
      el("span", { class: "why", textContent: because(r.reason) }));
  }));
  const lag = Math.max(0, Date.now() / 1000 - msg.event_ts) * 1000;
  $("#status").textContent = `${msg.strategy} · list #${msg.seq} · ${lag.toFixed(0)} ms after your event`;
}

function renderRecs(msg) {
  shown = msg;
  drawRecs(msg);
  log.panelLog.push({ t: performance.now(), seq: msg.seq, rec_id: msg.rec_id, trigger_event_id: msg.trigger_event_id,
    items: msg.items.slice(0, 10).map((r) => r.item_id), categories: msg.items.slice(0, 10).map((r) => (byId.get(r.item_id) || {}).category || null) });
}

function listen(user, token, resumeSeq = null) {
  const query = new URLSearchParams({ token });
  if (viewing) query.append("exclude", viewing);
  // Reopened for another product: the list on screen needs no second copy.
  if (resumeSeq != null) query.set("last_event_id", String(resumeSeq));
  const source = new EventSource(`/v1/users/${encodeURIComponent(user)}/recommendations/stream?${query}`);
  source.onopen = () => { log.connected = true; };
  source.onmessage = (e) => renderRecs(JSON.parse(e.data));
  source.addEventListener("token-expired", () => { source.close(); $("#status").textContent = "session expired: reload the page"; });
  source.onerror = () => { if (source.readyState !== EventSource.CLOSED) $("#status").textContent = "reconnecting…"; };
  return source;
}

function showViewing() {
  const item = viewing && (byId.get(viewing) || { item_id: viewing });
  $("#viewing").textContent = item ? `viewing: ${item.title || item.item_id}` : "";
}

function openProduct(itemId, user, token) {
  if (!itemId || itemId === viewing) return;
  viewing = itemId;
  log.viewing = itemId;
  showViewing();
  // The list on screen may lead with the product just opened: take it out now (the
  // next list from the gateway comes without it).
  if (shown) drawRecs({ ...shown, items: shown.items.filter((r) => r.item_id !== itemId) });
  stream.close();
  stream = listen(user, token, shown ? shown.seq : null);
}

async function main() {
  const [{ user_id, token }, catalog] = await Promise.all([session(), fetch("/demo/catalog").then((r) => r.json())]);
  log.user = user_id;
  for (const item of catalog) {
    byId.set(item.item_id, item);
    if (item.available === false) continue;
    const cat = item.category || "other";
    if (!byCategory.has(cat)) byCategory.set(cat, []);
    byCategory.get(cat).push(item);
  }
  $("#who").textContent = `user ${user_id}`;
  // The token lets the tracker send this user's events (and consent changes) to the collector.
  tracker = createTracker({ userId: user_id, token, page: "storefront" });
  log.tracker = tracker;
  $("#consent").onchange = (e) => tracker.setConsent(e.target.checked);
  $("#grid").addEventListener("click", (e) => {
    const c = e.target.closest(".card");
    if (!c) return;
    c.classList.add("clicked");
    if (!e.target.closest("button")) openProduct(c.dataset.itemId, user_id, token);
  });
  log.viewing = viewing;
  showViewing();
  renderNav();
  renderGrid();
  stream = listen(user_id, token);
  log.ready = true;
}

main().catch((err) => { $("#status").textContent = String(err.message || err); log.error = String(err); });
