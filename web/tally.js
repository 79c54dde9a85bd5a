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
// While the page lives, a batch is a fetch whose answer is read: a 503 (or
// 429) means Tally took none of it, and it is sent again later, with backoff,
// `retries` times at most. When the page goes away nothing can wait for an
// answer: navigator.sendBeacon, else fetch with keepalive, else an image pixel.
// A request that got no answer at all is not sent again: it may have been
// counted, and exact counts matter more here than a lost click.
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
    retries: data.retries ? +data.retries : 4, // times one event is sent again after a 503 or 429
    backoff: +data.backoff || 1000, // first retry delay in ms; doubles each time (with jitter), at most 30 s
    auto: data.auto !== "false", // track clicks on [data-tally-label] elements
    respectDnt: data.respectDnt === "true", // send nothing when the visitor asks not to be tracked
  };
  const queue = []; // {label, category, dom_id, ts} and n, the times it was refused
  let timer = 0;
  let busy = false; // one request in flight at a time, so batches stay in order
  let holdUntil = 0; // after a 503, nothing leaves before this (except when the page goes away)
  let failures = 0; // 503s in a row: the backoff's exponent

  const url = (path, base) => (base || options.endpoint).replace(/\/$/, "") + path;
  const json = (batch) => JSON.stringify({ events: batch }, (key, value) => (key === "n" ? undefined : value));

  function optedOut() {
    return (
      options.respectDnt &&
      (navigator.globalPrivacyControl === true || navigator.doNotTrack === "1" || window.doNotTrack === "1")
    );
  }

  function add(label, category, domId) {
    if (!label || optedOut()) return;
    if (queue.length >= options.maxQueue) {
      tally.dropped++;
      return;
    }
    queue.push({ label: label, category: category || "", dom_id: domId || "", ts: Date.now(), n: 0 });
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
    if (queue.length >= options.batch) flush();
    else schedule(options.interval);
  }

  function schedule(delay) {
    if (!timer && queue.length)
      timer = setTimeout(() => {
        timer = 0;
        flush();
      }, delay);
  }

  function flush(leaving) {
    if (leaving) {
      clearTimeout(timer);
      timer = 0;
      while (queue.length) beacon(queue.splice(0, options.batch));
      return;
    }
    if (busy || !queue.length || navigator.onLine === false) return; // offline: the "online" event sends
    const wait = holdUntil - Date.now();
    if (wait > 0) return schedule(wait);
    const batch = queue.splice(0, options.batch);
    if (!window.fetch || !options.retries) return beacon(batch);
    busy = true;
    fetch(url("/track/"), { method: "POST", body: json(batch), keepalive: true, credentials: "omit" }).then(
      (response) => {
        if (response.status === 503 || response.status === 429) refused(batch, response.headers.get("Retry-After"));
        else failures = 0;
        next();
      },
      () => {
        // No answer. Offline: it never left, so it waits for the network. Otherwise it may have been counted.
        if (navigator.onLine === false) queue.unshift.apply(queue, batch);
        next();
      },
    );
  }

  function next() {
    busy = false;
    queued();
  }

  function refused(batch, retryAfter) {
    const again = batch.filter((event) => ++event.n <= options.retries);
    tally.dropped += batch.length - again.length;
    queue.unshift.apply(queue, again);
    const backoff = options.backoff * 2 ** failures++ * (0.5 + Math.random() / 2);
    holdUntil = Date.now() + Math.min(30000, Math.max(backoff, +retryAfter * 1000 || 0));
  }

  // The page is going away: no answer will be read, so the most reliable way first.
  function beacon(batch) {
    const body = json(batch);
    if (navigator.sendBeacon && navigator.sendBeacon(url("/track/"), body)) return;
    if (window.fetch) fetch(url("/track/"), { method: "POST", body: body, keepalive: true, credentials: "omit" }).catch(() => pixel(batch));
    else pixel(batch);
  }

  function pixel(batch) {
    const labels = batch.map((e) => [e.label, e.category, e.dom_id].join(":"));
    while (labels.length) new Image().src = url("/track.gif?labels=") + encodeURIComponent(labels.splice(0, 20).join("|"));
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
  document.addEventListener("visibilitychange", () => document.visibilityState === "hidden" && flush(true));
  window.addEventListener("online", () => flush());
  if (early && early.length) track(early);
})(window, document, navigator);
