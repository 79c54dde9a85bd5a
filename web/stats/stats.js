// Tally's stats page: plain JS, no build step. Reads /api/v1 with the read token
// the visitor types (kept in sessionStorage, sent as a bearer token, never in a URL).
"use strict";

const TOKEN_KEY = "tally-read-token";
const DEFAULT_DAYS = 14;
const HEATMAP_TILES = 200;
const MAX_ROWS = 10000;

const $ = (id) => document.getElementById(id);

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

function daysBetween(from, to) {
  const days = [];
  const end = new Date(to + "T00:00:00Z");
  for (let d = new Date(from + "T00:00:00Z"); d <= end; d.setUTCDate(d.getUTCDate() + 1)) {
    days.push(isoDay(d));
  }
  return days;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
  }
}

async function api(endpoint, params, format = "json") {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) query.append(name, v);
  }
  if (format !== "json") query.set("format", format);
  const response = await fetch(`../api/v1/${endpoint}?${query}`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` },
    cache: "no-store",
  });
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, body);
  }
  return format === "json" ? response.json() : response.blob();
}

function filters() {
  const category = $("category").value;
  return {
    from: $("from").value,
    to: $("to").value,
    category: category === "*" ? undefined : category,
    q: $("search").value.trim() || undefined,
  };
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showFreshness(answers) {
  const times = answers.map((a) => a.fresh_as_of).filter(Boolean).sort();
  if (!times.length) {
    $("freshness").textContent = "No counts in this range yet.";
    return;
  }
  const latest = new Date(times[times.length - 1]);
  const seconds = Math.max(0, Math.round((Date.now() - latest.getTime()) / 1000));
  $("freshness").textContent = `Counts as of ${latest.toLocaleString()} (${seconds} s ago)`;
  $("freshness").dataset.freshAsOf = times[times.length - 1];
}

function sparkline(values) {
  const w = 120, h = 24, pad = 2;
  // Scaled from the row's lowest to its highest day, so a change shows; a flat row is a middle line.
  const min = Math.min(...values), max = Math.max(...values);
  const step = values.length > 1 ? (w - 2 * pad) / (values.length - 1) : 0;
  const y = (v) => (max === min ? h / 2 : h - pad - ((v - min) / (max - min)) * (h - 2 * pad));
  const points = values.map((v, i) => [pad + i * step, y(v)]);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `daily counts: ${values.join(", ")}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p) => p.map((n) => n.toFixed(1)).join(",")).join(" "));
  svg.append(line);
  const [lx, ly] = points[points.length - 1];
  const dot = document.createElementNS(ns, "circle");
  dot.setAttribute("cx", lx.toFixed(1));
  dot.setAttribute("cy", ly.toFixed(1));
  dot.setAttribute("r", "2");
  svg.append(dot);
  return svg;
}

function renderTable(days, top, daily) {
  const perLabel = new Map(top.rows.map((r) => [r.label, new Map()]));
  for (const row of daily ? daily.rows : []) perLabel.get(row.label)?.set(row.day, row.counter);

  const head = $("labels").tHead.rows[0];
  while (head.cells.length > 3) head.deleteCell(3);
  for (const day of days) head.append(el("th", { class: "day", title: day }, day.slice(5)));

  const body = $("labels").tBodies[0];
  body.replaceChildren();
  for (const row of top.rows) {
    const counts = days.map((d) => perLabel.get(row.label).get(d) || 0);
    const tr = el("tr", { "data-label": row.label },
      el("td", { class: "label" }, row.label),
      el("td", { class: "num total" }, row.counter.toLocaleString()),
      el("td", { class: "trend" }, sparkline(counts)));
    counts.forEach((n, i) => tr.append(el("td", { class: n ? "day" : "day zero", title: days[i] }, String(n))));
    body.append(tr);
  }
  if (!top.rows.length) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: String(3 + days.length) }, "No labels counted.")));
  }
  $("labels-summary").textContent =
    `top ${top.rows.length} by count, ${top.total.toLocaleString()} events in all, ${days.length} days`;
}

function heat(fraction) {
  // The seed's example page: cold blue to hot red.
  const hue = Math.round(240 * (1 - fraction));
  return `hsl(${hue}, 75%, 45%)`;
}

function renderHeatmap(answer) {
  const tiles = answer.rows.filter((r) => r.dom_id !== "");
  // Log scale from the coldest to the hottest tile: a few huge counts do not wash out the rest.
  const logs = tiles.map((r) => Math.log(r.counter));
  const low = Math.min(...logs), high = Math.max(...logs);
  const box = $("heatmap");
  box.replaceChildren();
  for (const row of tiles) {
    const fraction = high > low ? (Math.log(row.counter) - low) / (high - low) : 1;
    box.append(el("div", {
      class: "tile", "data-dom-id": row.dom_id, "data-count": String(row.counter),
      style: `background: ${heat(fraction)}`, title: `${row.dom_id}: ${row.counter}`,
    }, el("div", { class: "id" }, row.dom_id), el("div", { class: "n" }, row.counter.toLocaleString())));
  }
  if (!tiles.length) box.append(el("p", { class: "empty" }, "No dom ids counted."));
  const withoutId = answer.rows.find((r) => r.dom_id === "");
  $("heatmap-note").textContent = withoutId
    ? `${withoutId.counter.toLocaleString()} events without a dom id are not shown.` : "";
}

async function loadCategories() {
  const { from, to } = filters();
  const answer = await api("categories", { from, to });
  const select = $("category");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "*" }, "all categories"));
  for (const row of answer.rows) {
    select.append(el("option", { value: row.category }, row.category === "" ? "(none)" : row.category));
  }
  select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "*";
}

async function load() {
  showError("");
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showError("Type the read token to see the counts.");
    return;
  }
  try {
    await loadCategories();
    const f = filters();
    const days = daysBetween(f.from, f.to);
    const top = await api("top", { ...f, by: "label", n: $("top").value });
    const labels = top.rows.map((r) => r.label);
    const daily = labels.length
      ? await api("counts", {
        ...f, label: labels, group_by: ["label", "day"],
        limit: Math.min(MAX_ROWS, labels.length * days.length),
      })
      : null;
    renderTable(days, top, daily);
    const heatmap = await api("top", { ...f, by: "dom_id", n: HEATMAP_TILES });
    renderHeatmap(heatmap);
    showFreshness([top, heatmap, daily].filter(Boolean));
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenForm();
    }
    showError(err.message);
  }
}

async function downloadCsv() {
  try {
    const f = filters();
    const blob = await api("counts", { ...f, group_by: ["day", "label", "category"], limit: MAX_ROWS }, "csv");
    const a = el("a", { href: URL.createObjectURL(blob), download: `tally-${f.from}-${f.to}.csv` });
    a.click();
    URL.revokeObjectURL(a.href);
  } catch (err) {
    showError(err.message);
  }
}

function showTokenForm() {
  const known = Boolean(sessionStorage.getItem(TOKEN_KEY));
  $("token-form").classList.toggle("ok", known);
  $("forget").hidden = !known;
}

function init() {
  const today = new Date();
  const start = new Date(today);
  start.setDate(start.getDate() - (DEFAULT_DAYS - 1));
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 10);
  $("to").value = local(today);
  $("from").value = local(start);

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    showTokenForm();
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenForm();
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("category").addEventListener("change", load);
  $("csv").addEventListener("click", downloadCsv);
  showTokenForm();
  load();
}

document.addEventListener("DOMContentLoaded", init);
