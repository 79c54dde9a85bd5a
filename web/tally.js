/*! tally.js: Tally's browser library. Plain JS, no dependencies, no cookies. MIT. */
// Counts labels ("label:category:dom_id") by sending them to a Tally ingest service:
//
//   <script src="https://tally.example/tally.js" async></script>
//   <a id="signup-btn" data-tally-label="signup" data-tally-category="forms" href="/signup">Sign up</a>
//   <script>(window.tally = window.tally || []).push("page_view:home")</script>
//
// Events wait in a queue and leave in batches: `interval` ms after the first
// one, at once when `batch` are waiting, and when the page is hidden or left
// (pagehide, visibilitychange), so a click right before a navigation counts.
// Each batch gets an idempotency key once (a UUID) and keeps it for every send,
// in the query (`idempotency_key`: no header, so no CORS preflight and a beacon
// carries it too): Tally counts a keyed request once however often it arrives.
// So a batch is sent again, with backoff, whatever happened to it: no answer
// (network error, `timeout`), a 5xx such as a 503, or a 429; for `retryFor` ms
// at most (well inside the server's TALLY_DEDUPE_WINDOW_S), then it is dropped
// and counted in tally.dropped. Any other answer ends the batch (a 4xx: it is
// bad, sending it again would not help). When the page goes away nothing can
// wait for an answer: the batches waiting, the one in flight and the queue
// leave by navigator.sendBeacon, else fetch with keepalive, else an image pixel;
// should a hidden page come back, those beacons are sent again by fetch.
(function (window, document, navigator) {
  "use strict";
  if (window.tally && window.tally.track) return; // loaded twice: one set of listeners, one count per click

  const script = document.currentScript;
  const data = (script && script.dataset) || {};
  const options = {
    // Where Tally is: by default where this script came from (its folder), so a page on
    // another origin that loads tally.js from Tally needs no setting.
    endpoint: data.endpoint || (script && script.src ? new URL(".", script.src).href : ""),
    interval: +data.interval || 1000, // ms from the first queued event to its batch
    batch: +data.batch || 50, // events per request (the server takes 500 in JSON, 50 in a pixel)
    maxQueue: +data.maxQueue || 1000, // past this, new events are dropped (and counted in tally.dropped)
    retries: data.retries ? +data.retries : 10, // times one batch is sent again; 0: every batch by sendBeacon
    retryFor: +data.retryFor || 300000, // ms from a batch's first send after which it is not sent again
    backoff: +data.backoff || 1000, // first retry delay in ms; doubles each time (with jitter), at most 30 s
    timeout: +data.timeout || 10000, // ms without an answer after which a request counts as unanswered
    auto: data.auto !== "false", // track clicks on [data-tally-label] elements
    respectDnt: data.respectDnt === "true", // send nothing when the visitor asks not to be tracked
  };
  const queue = []; // events not in a batch yet: {label, category, dom_id, ts}
  const outbox = []; // batches, oldest first: {key, events, tries, since (ms of its first send, 0: not sent)}
  let left = []; // batches sent as beacons when the page was hidden: sent again should it come back
  let timer = 0;
  let busy = false; // one request in flight at a time (outbox[0]), so batches stay in order
  let holdUntil = 0; // after a failed send, nothing leaves before this (except when the page goes away)
  let failures = 0; // failed sends in a row: the backoff's exponent

  const url = (path, key, base) =>
    (base || options.endpoint).replace(/\/$/, "") + path + (key ? "?idempotency_key=" + key : "");
  const json = (batch) => JSON.stringify({ events: batch.events });
  const waiting = () => outbox.reduce((n, batch) => n + batch.events.length, queue.length);

  // 1-64 of A-Z a-z 0-9 _ -: a UUID, or 22 random characters of those (132 bits) where randomUUID is missing.
  function newKey() {
    const c = window.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    const bytes = c && c.getRandomValues ? c.getRandomValues(new Uint8Array(22)) : [];
    let key = "";
    for (let i = 0; i < 22; i++)
      key += "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"[(bytes[i] || Math.random() * 64) & 63];
    return key;
  }

  function optedOut() {
    return (
      options.respectDnt &&
      (navigator.globalPrivacyControl === true || navigator.doNotTrack === "1" || window.doNotTrack === "1")
    );
  }

  function add(label, category, domId) {
    if (!label || optedOut()) return;
    if (waiting() >= options.maxQueue) {
      tally.dropped++;
      return;
    }
    queue.push({ label: label, category: category || "", dom_id: domId || "", ts: Date.now() });
  }

  // "label", "label:category", "label:category:dom_id" ("+" works as ":"), several joined by "|", or an array of those.
  function track(labels) {
    [].concat(labels).forEach((text) =>
      String(text)
        .split("|")
        .forEach((one) => add.apply(null, one.split(/[:+]/))),
    );
    queued();
  }

  function queued() {
    if (outbox.length || queue.length >= options.batch) flush();
    else schedule(options.interval);
  }

  function schedule(delay) {
    if (!timer && (queue.length || outbox.length))
      timer = setTimeout(() => {
        timer = 0;
        flush();
      }, delay);
  }

  // The next batch: the oldest one waiting, else a new one from the queue, with a key of its own.
  const nextBatch = () =>
    outbox[0] ||
    (queue.length && outbox.push({ key: newKey(), events: queue.splice(0, options.batch), tries: 0, since: 0 }) && outbox[0]);

  // Past its time a batch is not sent again: its key might be forgotten by Tally, and it could count twice.
  const expired = (batch) => batch.since && Date.now() - batch.since > options.retryFor;

  function flush(leaving) {
    if (leaving) {
      clearTimeout(timer);
      timer = 0;
      // Every batch leaves now with its key, the one in flight too: if its fetch arrives as well, it counts once.
      while (nextBatch()) {
        const batch = outbox.shift();
        if (!expired(batch)) {
          batch.since = batch.since || Date.now();
          left.push(batch);
          beacon(batch);
        } else tally.dropped += batch.events.length;
      }
      return;
    }
    if (busy || navigator.onLine === false) return; // offline: the "online" event sends
    const wait = holdUntil - Date.now();
    if (wait > 0) return schedule(wait);
    const batch = nextBatch();
    if (!batch) return;
    if (!window.fetch || !options.retries) return beacon(outbox.shift());
    busy = true;
    batch.since = batch.since || Date.now();
    const abort = window.AbortController && new AbortController();
    const timeout = setTimeout(() => abort && abort.abort(), options.timeout);
    fetch(url("/track/", batch.key), {
      method: "POST",
      body: json(batch),
      keepalive: true,
      credentials: "omit",
      signal: abort && abort.signal,
    }).then(
      (response) => {
        const status = response.status;
        if (status === 429 || status >= 500) failed(batch, response.headers.get("Retry-After"));
        else done(batch);
      },
      () => {
        // No answer: it may have been counted, or not; its key makes sending it again safe. Offline, it never left.
        if (navigator.onLine === false && batch.tries === 0) batch.since = 0;
        else failed(batch);
      },
    ).then(() => {
      clearTimeout(timeout);
      busy = false;
      queued();
    });
  }

  function done(batch) {
    failures = 0;
    const at = outbox.indexOf(batch);
    if (at >= 0) outbox.splice(at, 1); // (not there if it left as a beacon meanwhile)
    left = left.filter((other) => other !== batch); // counted: no need to send it again
  }

  function failed(batch, retryAfter) {
    const backoff = options.backoff * 2 ** failures++ * (0.5 + Math.random() / 2);
    holdUntil = Date.now() + Math.min(30000, Math.max(backoff, +retryAfter * 1000 || 0));
    const at = outbox.indexOf(batch); // (not there if it left as a beacon meanwhile)
    if (at >= 0 && (++batch.tries > options.retries || holdUntil - batch.since > options.retryFor)) {
      outbox.splice(at, 1); // given up: its next send would come too late
      tally.dropped += batch.events.length;
    }
  }

  // The page is back (a tab shown again, a page restored from the back-forward cache): a beacon's answer is never
  // seen, so what left as one is sent again, under the same key, to hear that it was counted.
  function back() {
    outbox.unshift.apply(outbox, left.filter((batch) => !expired(batch) && outbox.indexOf(batch) < 0));
    left = [];
    queued();
  }

  // The page is going away: no answer will be read, so the most reliable way first.
  function beacon(batch) {
    const body = json(batch);
    const to = url("/track/", batch.key);
    if (navigator.sendBeacon && navigator.sendBeacon(to, body)) return;
    if (window.fetch) fetch(to, { method: "POST", body: body, keepalive: true, credentials: "omit" }).catch(() => pixel(batch));
    else pixel(batch);
  }

  // The last resort, 20 events a request: each with a key of its own, made from the batch's (so the batch
  // is not sent again under its own key should the page come back: that would be another request).
  function pixel(batch) {
    left = left.filter((other) => other !== batch);
    const labels = batch.events.map((e) => [e.label, e.category, e.dom_id].join(":"));
    for (let i = 0; labels.length; i++)
      new Image().src =
        url("/track.gif", batch.key + "-" + i) + "&labels=" + encodeURIComponent(labels.splice(0, 20).join("|"));
  }

  // Cold blue (0) to hot red (the most clicked), on a log scale so one hot spot does not wash out the rest.
  const heat = (count, max) => "hsl(" + Math.round(240 - (max ? (240 * Math.log1p(count)) / Math.log1p(max) : 0)) + ",75%,45%)";
  const clicked = (count) => "clicked " + count + (count === 1 ? " time" : " times");

  // Today's counts (or o.day's) of the tracked elements in container, drawn on them (or over them, with o.overlay).
  function heatmap(container, o) {
    o = o || {};
    container = typeof container === "string" ? document.querySelector(container) : container || document.body;
    const elements = [].filter.call(container.querySelectorAll(o.selector || "[data-tally-label]"), (el) => el.id);
    const ids = elements.map((el) => el.id).filter((id, i, all) => all.indexOf(id) === i);
    const requests = [];
    for (let i = 0; i < ids.length; i += 100) {
      const query = "?dom_ids=" + encodeURIComponent(ids.slice(i, i + 100).join("|") + "|") + (o.day ? "&day=" + o.day : "");
      requests.push(
        fetch(url("/get_stats/", o.endpoint) + query, {
          credentials: "omit",
          headers: o.token ? { Authorization: "Bearer " + o.token } : {},
        }).then((response) => {
          if (!response.ok) throw new Error("tally: /get_stats/ answered " + response.status);
          return response.json();
        }),
      );
    }
    return Promise.all(requests).then((answers) => {
      const counts = {};
      answers.forEach((rows) => rows.forEach((row) => (counts[row[0]] = (counts[row[0]] || 0) + row[1])));
      const max = Math.max.apply(null, ids.map((id) => counts[id] || 0).concat(0));
      let layer = document.getElementById("tally-heatmap");
      if (layer) layer.remove();
      if (o.overlay) {
        layer = document.body.appendChild(document.createElement("div"));
        layer.id = "tally-heatmap";
        layer.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;z-index:2147483647";
      }
      elements.forEach((el) => {
        const count = counts[el.id] || 0;
        let badge = el.querySelector("[data-tally-count]");
        if (o.overlay) {
          const box = el.getBoundingClientRect();
          badge = layer.appendChild(document.createElement("div"));
          badge.style.cssText =
            "position:absolute;box-sizing:border-box;display:flex;align-items:center;justify-content:center;" +
            "opacity:.85;color:#fff;font:bold 12px sans-serif;border-radius:3px;left:" + (box.left + scrollX) +
            "px;top:" + (box.top + scrollY) + "px;width:" + box.width + "px;height:" + box.height + "px";
        } else {
          if (!badge) badge = el.appendChild(document.createElement("span"));
          el.style.background = heat(count, max);
          el.style.color = "#fff";
        }
        badge.setAttribute("data-tally-count", count);
        badge.setAttribute("data-tally-for", el.id);
        badge.style.background = heat(count, max);
        badge.textContent = o.overlay ? clicked(count) : " (" + clicked(count) + ")";
      });
      return counts;
    });
  }

  const early = window.tally; // events pushed before this script loaded
  const tally = (window.tally = {
    track: track,
    push: track,
    flush: () => flush(),
    heatmap: heatmap,
    options: options,
    dropped: 0,
  });
  document.addEventListener(
    "click",
    (event) => {
      const el = options.auto && event.target.closest && event.target.closest("[data-tally-label]");
      if (el) {
        add(el.getAttribute("data-tally-label"), el.getAttribute("data-tally-category"), el.id);
        queued();
      }
    },
    true,
  );
  window.addEventListener("pagehide", () => flush(true));
  document.addEventListener("visibilitychange", () => (document.visibilityState === "hidden" ? flush(true) : back()));
  window.addEventListener("pageshow", (event) => event.persisted && back());
  window.addEventListener("online", () => flush());
  if (early && early.length) track(early);
})(window, document, navigator);
