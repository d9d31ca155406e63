// streamrec tracker: a plain ES module, no dependencies. Served by the gateway at /v1/tracker.js.
//
//   import { createTracker } from "/v1/tracker.js";
//   const tracker = createTracker({ userId: "u42", token, consent: () => cookieBannerSaidYes });
//
// Markup it understands (nothing else is needed for the automatic events):
//   data-item-id="p9" data-category="shoes"   an item: clicks, hovers, dwell, impressions
//   data-track="add_to_cart" | "wishlist" | "purchase" | "remove_from_cart"   an action button
//   data-value="79.0"                          the value of an action (e.g. a purchase amount)
//   data-rec-id="..."                          a list of recommended items (impressions, attribution)
// Every tracked event is also dispatched on window as CustomEvent("streamrec:track").
// When consent is off nothing is queued or sent, and the queue is emptied.
// tracker.setConsent(false) first tells the server (a `consent` event with value 0, which
// makes the worker forget the user), then stops; setConsent(true) sends value 1. Consent
// events need the user's token (option `token`), also for anonymous ids.

const DEFAULTS = {
  endpoint: "/v1/events",
  userId: null,
  token: null,
  consent: () => document.documentElement.dataset.streamrecConsent !== "off",
  page: null, // context.page; default location.pathname
  flushInterval: 2000, // ms between batched sends of low-value events
  maxBatch: 50,
  maxQueue: 500,
  immediate: ["click", "add_to_cart", "remove_from_cart", "wishlist", "purchase", "rating", "search"],
  hoverMs: 800, // hovers shorter than this are noise
  itemDwellMs: 2000, // an item visible (>= half) this long counts as dwell
  pageDwellMs: 1000,
  sessionGapMs: 30 * 60 * 1000,
  root: null, // default document.body
};

const now = () => Date.now();
const uid = () =>
  globalThis.crypto && crypto.randomUUID ? crypto.randomUUID() : `${now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;

function storage(kind) {
  try {
    const s = window[kind];
    s.setItem("streamrec.probe", "1");
    s.removeItem("streamrec.probe");
    return s;
  } catch {
    const mem = new Map();
    return { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, String(v)), removeItem: (k) => mem.delete(k) };
  }
}

export function createTracker(options = {}) {
  const o = { ...DEFAULTS, ...options };
  const root = o.root || document.body;
  const session = storage("sessionStorage");
  const local = storage("localStorage");
  let queue = [];
  let timer = null;
  let retryAt = 0;
  let forcedConsent = null;
  const impressions = new Map(); // rec_id or "" -> item ids entered the viewport, not yet sent
  const impressed = new Set(); // "rec_id|item" already counted
  const hoverStart = new WeakMap();
  const visibleSince = new Map(); // element -> ms when it became >= half visible
  const watched = new WeakSet();
  const scrollMarks = new Set();
  let pageVisibleMs = 0;
  let pageShownAt = document.visibilityState === "visible" ? now() : null;

  const consented = () => (forcedConsent !== null ? forcedConsent : typeof o.consent === "function" ? !!o.consent() : !!o.consent);

  function userId() {
    if (o.userId) return o.userId;
    let anon = local.getItem("streamrec.anon");
    if (!anon) local.setItem("streamrec.anon", (anon = `anon-${uid()}`));
    return anon;
  }

  function sessionId() {
    let s = null;
    try { s = JSON.parse(session.getItem("streamrec.session") || "null"); } catch { s = null; }
    if (!s || now() - s.last > o.sessionGapMs) s = { id: `s-${uid()}`, last: now() };
    s.last = now();
    session.setItem("streamrec.session", JSON.stringify(s));
    return s.id;
  }

  function itemOf(el) {
    const item = el && el.closest ? el.closest("[data-item-id]") : null;
    return item ? { el: item, id: item.dataset.itemId, category: item.dataset.category || undefined } : null;
  }

  function recIdOf(el) {
    const list = el && el.closest ? el.closest("[data-rec-id]") : null;
    return list ? list.dataset.recId || undefined : undefined;
  }

  function track(type, fields = {}) {
    if (!consented()) {
      queue = [];
      impressions.clear();
      return null;
    }
    const event = {
      event_id: uid(),
      ts: now() / 1000,
      user_id: userId(),
      session_id: sessionId(),
      type,
      ...fields,
      context: { page: o.page || location.pathname, ...(fields.context || {}) },
    };
    for (const k of Object.keys(event)) if (event[k] === undefined) delete event[k];
    queue.push(event);
    if (queue.length > o.maxQueue) queue.splice(0, queue.length - o.maxQueue);
    window.dispatchEvent(new CustomEvent("streamrec:track", { detail: event }));
    schedule(o.immediate.includes(type) ? 0 : o.flushInterval);
    return event;
  }

  function itemEvent(type, itemId, category, extra = {}) {
    return track(type, { item_id: String(itemId), category, ...extra });
  }

  function schedule(delay) {
    const wait = Math.max(delay, retryAt - now());
    if (timer !== null && wait > 0) return;
    if (timer !== null) clearTimeout(timer);
    timer = setTimeout(() => { timer = null; flush(); }, wait);
  }

  function drainImpressions() {
    const lists = [...impressions];
    impressions.clear();
    for (const [recId, items] of lists) {
      // One event per list: the items of that list that entered the viewport.
      if (items.length) track("impression", { context: { items, ...(recId ? { rec_id: recId } : { list: "page" }) } });
    }
  }

  function flush({ beacon = false } = {}) {
    if (!consented()) { queue = []; impressions.clear(); return; }
    drainImpressions();
    if (!queue.length) return;
    send(queue.splice(0, o.maxBatch), beacon);
    if (queue.length) { if (beacon) flush({ beacon }); else schedule(0); }
  }

  function send(batch, beacon = false) {
    let url = `${o.endpoint}?sent_at=${(now() / 1000).toFixed(3)}`;
    if (o.token) url += `&token=${encodeURIComponent(o.token)}`;
    const body = JSON.stringify(batch);
    // text/plain keeps sendBeacon and cross-origin fetch free of a CORS preflight.
    if (beacon && navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }))) return;
    fetch(url, { method: "POST", body, keepalive: true, credentials: "omit", headers: { "Content-Type": "text/plain" } })
      .then((r) => {
        if (r.status === 429 || r.status === 503) retry(batch, Number(r.headers.get("Retry-After")) || 2);
      })
      .catch(() => retry(batch, 2));
  }

  // The server hears of a consent change at once, outside the queue: withdrawal must be
  // sent although nothing else may be any more.
  function sendConsent(on) {
    const event = { event_id: uid(), ts: now() / 1000, user_id: userId(), type: "consent", value: on ? 1 : 0 };
    window.dispatchEvent(new CustomEvent("streamrec:track", { detail: event }));
    send([event]);
  }

  function retry(batch, seconds) {
    // A consent change is retried on its own: the queue is dropped while consent is off.
    const consents = batch.filter((e) => e.type === "consent");
    if (consents.length) setTimeout(() => send(consents), seconds * 1000);
    batch = consented() ? batch.filter((e) => e.type !== "consent") : [];
    queue = batch.concat(queue).slice(-o.maxQueue);
    retryAt = now() + seconds * 1000;
    schedule(seconds * 1000);
  }

  // -- automatic events
  function onClick(e) {
    const action = e.target.closest && e.target.closest("[data-track]");
    const item = itemOf(e.target);
    if (action) {
      const value = action.dataset.value !== undefined ? Number(action.dataset.value) : undefined;
      const id = action.dataset.itemId || (item && item.id);
      if (id) itemEvent(action.dataset.track, id, action.dataset.category || (item && item.category),
        { value, context: { rec_id: recIdOf(action) } });
      return;
    }
    if (item) itemEvent("click", item.id, item.category, { context: { rec_id: recIdOf(item.el) } });
  }

  function onOver(e) {
    const item = itemOf(e.target);
    if (item && !(e.relatedTarget && item.el.contains(e.relatedTarget))) hoverStart.set(item.el, now());
  }

  function onOut(e) {
    const item = itemOf(e.target);
    if (!item || (e.relatedTarget && item.el.contains(e.relatedTarget))) return;
    const start = hoverStart.get(item.el);
    hoverStart.delete(item.el);
    if (start !== undefined && now() - start >= o.hoverMs) itemEvent("hover", item.id, item.category, { value: now() - start });
  }

  let scrollPending = false;
  function onScroll() {
    if (scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => {
      scrollPending = false;
      const doc = document.documentElement;
      const depth = Math.min(1, (window.scrollY + window.innerHeight) / Math.max(1, doc.scrollHeight));
      for (const mark of [0.25, 0.5, 0.75, 1]) {
        if (depth >= mark - 0.005 && !scrollMarks.has(mark)) { scrollMarks.add(mark); track("scroll", { value: mark }); }
      }
    });
  }

  function endItemDwell(el, at = now()) {
    const since = visibleSince.get(el);
    visibleSince.delete(el);
    if (since !== undefined && at - since >= o.itemDwellMs) {
      const item = itemOf(el);
      if (item) itemEvent("dwell", item.id, item.category, { value: at - since, context: { rec_id: recIdOf(el) } });
    }
  }

  const io = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const el = entry.target;
      if (entry.isIntersecting && entry.intersectionRatio >= 0.5) {
        if (!visibleSince.has(el)) visibleSince.set(el, now());
        const item = itemOf(el);
        const recId = recIdOf(el) || "";
        const key = `${recId}|${item.id}`;
        if (!impressed.has(key)) {
          impressed.add(key);
          if (!impressions.has(recId)) impressions.set(recId, []);
          impressions.get(recId).push(item.id);
          schedule(o.flushInterval);
        }
      } else {
        endItemDwell(el);
      }
    }
  }, { threshold: [0, 0.5] }) : null;

  function watch(scope) {
    if (!io) return;
    const found = scope.matches && scope.matches("[data-item-id]") ? [scope] : [];
    for (const el of found.concat([...(scope.querySelectorAll ? scope.querySelectorAll("[data-item-id]") : [])])) {
      if (!watched.has(el)) { watched.add(el); io.observe(el); }
    }
  }

  const mo = new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) if (n.nodeType === 1) watch(n);
      for (const n of r.removedNodes) if (n.nodeType === 1 && io) {
        for (const el of [n, ...n.querySelectorAll("[data-item-id]")]) if (watched.has(el)) { endItemDwell(el); io.unobserve(el); watched.delete(el); }
      }
    }
  });

  function pageHidden() {
    if (pageShownAt !== null) { pageVisibleMs += now() - pageShownAt; pageShownAt = null; }
    for (const el of [...visibleSince.keys()]) endItemDwell(el);
    if (pageVisibleMs >= o.pageDwellMs) {
      const pageItem = document.body.dataset.pageItemId;
      track("dwell", { value: pageVisibleMs, item_id: pageItem, category: document.body.dataset.pageCategory });
      pageVisibleMs = 0;
    }
    flush({ beacon: true });
  }

  function onVisibility() {
    if (document.visibilityState === "hidden") pageHidden();
    else if (pageShownAt === null) pageShownAt = now();
  }

  root.addEventListener("click", onClick, true);
  root.addEventListener("mouseover", onOver, true);
  root.addEventListener("mouseout", onOut, true);
  window.addEventListener("scroll", onScroll, { passive: true });
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("pagehide", pageHidden);
  mo.observe(root, { childList: true, subtree: true });
  watch(root);

  return {
    track,
    view: (itemId, category) => itemEvent("view", itemId, category),
    addToCart: (itemId, category) => itemEvent("add_to_cart", itemId, category),
    removeFromCart: (itemId, category) => itemEvent("remove_from_cart", itemId, category),
    wishlist: (itemId, category) => itemEvent("wishlist", itemId, category),
    purchase: (itemId, category, value) => itemEvent("purchase", itemId, category, { value }),
    flush,
    setConsent(on) {
      const changed = consented() !== !!on;
      if (!on) { queue = []; impressions.clear(); }
      if (changed) sendConsent(!!on);
      forcedConsent = !!on;
    },
    setUser(id, token) { o.userId = id; if (token !== undefined) o.token = token; },
    get sessionId() { return sessionId(); },
    get pending() { return queue.length; },
    stop() {
      pageHidden();
      root.removeEventListener("click", onClick, true);
      root.removeEventListener("mouseover", onOver, true);
      root.removeEventListener("mouseout", onOut, true);
      window.removeEventListener("scroll", onScroll);
      document.removeEventListener("visibilitychange", onVisibility);
      window.removeEventListener("pagehide", pageHidden);
      mo.disconnect();
      if (io) io.disconnect();
      if (timer !== null) clearTimeout(timer);
    },
  };
}

export default createTracker;
