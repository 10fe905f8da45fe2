// The ai-cache dashboard: one plain module, no framework, no build step. It reads the JSON
// API with the key the user enters (kept in this tab's session storage only) and draws
// every number it shows from an API answer, which each table and chart links to (JSON) and
// offers as CSV. Every text that comes from the API is set as text (never parsed as HTML):
// page titles, user agents and referrers come from strangers.

const KEY = "aicache.key";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const filtersForm = document.getElementById("filters");
const clientSwitch = document.getElementById("client-switch");
const signOut = document.getElementById("sign-out");
const numbers = new Intl.NumberFormat("en");
const PALETTE = ["#1f6feb", "#d4572a", "#2a9d5c", "#8250df", "#bf8700", "#cf222e", "#0a7b83",
  "#6e7781", "#a0457a", "#57606a", "#116329", "#953800"];

// ---- the API -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function apiUrl(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  return url;
}

async function call(path, params) {
  const response = await fetch(apiUrl(path, params), {
    headers: { "X-API-Key": sessionStorage.getItem(KEY) || "" },
  });
  if (!response.ok) {
    let code = "error";
    let message = `${response.status} ${response.statusText}`;
    try {
      const { error } = await response.json();
      code = error.code || code;
      message = error.message || message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

async function get(path, params) {
  return (await call(path, params)).json();
}

async function text(path, params) {
  return (await call(path, params)).text();
}

// A CSV (or JSON) download of an API answer: fetched with the key, saved by the browser.
async function download(path, params, filename) {
  const blob = await (await call(path, params)).blob();
  const link = h("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ---- building the page ---------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const fmt = (n) => (n === null || n === undefined ? "—" : numbers.format(n));
const pct = (x) => `${(100 * x).toFixed(1)}%`;
function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}
const when = (t) => (t ? new Date(t).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "—");

// A number cell: shown formatted, its raw value in data-value (what the tests compare).
const num = (n, shown) => h("td", { class: "num", dataset: { value: n ?? "" } }, shown ?? fmt(n));

function card(label, value, shown, note) {
  return h("div", { class: "card" },
    h("div", { class: "card-label" }, label),
    h("div", { class: "card-value", dataset: { value } }, shown ?? fmt(value)),
    note ? h("div", { class: "card-note" }, note) : null);
}

function table(caption, headers, rows, { empty = "Nothing in this range." } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows));
}

// A section with a title, its JSON source and its CSV export.
function section(title, source, ...body) {
  const tools = h("div", { class: "tools" });
  if (source) {
    const json = source.file ? source.file.replace(/\.csv$/, ".json") : "answer.json";
    tools.append(h("button", { type: "button", class: "json",
      title: "Download the API answer this comes from",
      onclick: () => download(source.path, source.params, json).catch(showError) }, "JSON"));
  }
  if (source && source.file) {
    tools.append(h("button", { type: "button", class: "csv",
      onclick: () => download(source.path, { ...source.params, format: "csv" }, source.file)
        .catch(showError) }, "CSV"));
  } else if (body.some((b) => b instanceof Element && b.matches("table"))) {
    // A table the API has no CSV of (it is part of a larger answer): the table as shown.
    const shown = body.find((b) => b instanceof Element && b.matches("table"));
    tools.append(h("button", { type: "button", class: "csv", onclick: () => saveTable(shown, title) }, "CSV"));
  }
  return h("section", { "aria-label": title }, h("div", { class: "section-head" }, h("h2", {}, title), tools), ...body);
}

// A table as CSV, its numbers raw; cells a spreadsheet would run as formulas quoted with '.
function saveTable(table, title) {
  const cell = (el) => {
    let text = el.dataset.value !== undefined && el.dataset.value !== "" ? el.dataset.value : el.textContent.trim();
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
    return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  const lines = [...table.querySelectorAll("tr")].map((tr) => [...tr.children].map(cell).join(","));
  const link = h("a", {
    href: URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" })),
    download: `${title.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")}.csv`,
  });
  document.body.append(link);
  link.click();
  link.remove();
}

function pageLink(client, id, label) {
  return id ? h("a", { href: `#/c/${client}/page/${id}` }, label) : h("span", {}, label);
}

// ---- charts (Chart.js, vendored) -----------------------------------------------------

// A chart with the table of its numbers beside it (for screen readers and for copying).
function chart(title, kind, labels, datasets, { stacked = false } = {}) {
  const canvas = h("canvas", { role: "img", "aria-label": `${title} (chart; its numbers are in the table below)` });
  const wrap = h("div", { class: "chart" }, canvas);
  const head = h("tr", {}, h("th", { scope: "col" }, kind === "doughnut" ? "Value" : "Bucket"),
    datasets.map((d) => h("th", { scope: "col" }, d.label)));
  const rows = labels.map((label, i) => h("tr", {}, h("th", { scope: "row" }, label),
    datasets.map((d) => num(d.data[i]))));
  const data = h("details", { class: "chart-data" }, h("summary", {}, "Numbers"),
    h("table", { dataset: { chart: title } }, h("caption", {}, title), h("thead", {}, head), h("tbody", {}, rows)));
  requestAnimationFrame(() => {
    // eslint-disable-next-line no-undef
    new Chart(canvas, {
      type: kind,
      data: {
        labels,
        datasets: datasets.map((d, i) => ({
          ...d,
          backgroundColor: kind === "doughnut" ? labels.map((_, j) => PALETTE[j % PALETTE.length]) : PALETTE[i % PALETTE.length],
          borderWidth: kind === "doughnut" ? 1 : 0,
        })),
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { position: "bottom" } },
        scales: kind === "doughnut" ? {} : {
          x: { stacked },
          y: { stacked, beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
    wrap.dataset.drawn = "true";
  });
  return h("figure", {}, h("figcaption", {}, title), wrap, data);
}

function seriesChart(title, series, interval) {
  const labels = series.buckets.map((b) => (interval === "hour" ? b.slice(5, 16).replace("T", " ") : b));
  return chart(title, "bar", labels, series.series.map((s) => ({ label: s.key, data: s.values })), { stacked: true });
}

function doughnut(title, groups) {
  return chart(title, "doughnut", groups.map((g) => g.key), [{ label: "Visits", data: groups.map((g) => g.visits) }]);
}

// ---- state: the key, the route, the filters ------------------------------------------

let me = null;
// Whether the next view is the first after signing in.
let landing = true;

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  return { parts: (path || "").split("/").filter(Boolean), params: new URLSearchParams(query || "") };
}

function go(parts, params) {
  const q = params ? params.toString() : route().params.toString();
  location.hash = `#/${parts.join("/")}${q ? "?" + q : ""}`;
}

const RANGES = { "24h": 1, "7d": 7, "30d": 30, "90d": 90, "365d": 365 };

// The API filters the route's query stands for.
function filters(params) {
  const range = params.get("range") || "30d";
  const out = {};
  if (range === "custom") {
    out.from = params.get("from") || undefined;
    out.to = params.get("to") || undefined;
  } else {
    const days = RANGES[range] || 30;
    const to = new Date();
    out.to = to.toISOString();
    out.from = new Date(to.getTime() - days * 86400000).toISOString();
  }
  for (const k of ["bot", "operator", "category"]) out[k] = params.get(k) || undefined;
  out.verified = params.get("verified") === "true" || undefined;
  return out;
}

function interval(params) {
  const range = params.get("range") || "30d";
  if (range === "24h") return "hour";
  if (range === "custom") {
    const from = Date.parse(params.get("from"));
    const to = Date.parse(params.get("to"));
    if (from && to && to - from <= 2 * 86400000) return "hour";
  }
  return "day";
}

function drawFilters(params) {
  filtersForm.hidden = false;
  filtersForm.replaceChildren();
  const range = params.get("range") || "30d";
  const select = h("select", { id: "f-range", name: "range" },
    [["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["30d", "Last 30 days"], ["90d", "Last 90 days"],
      ["365d", "Last year"], ["custom", "Dates…"]]
      .map(([v, label]) => h("option", { value: v, selected: v === range }, label)));
  const input = (id, name, label, type = "text", list) => h("label", { for: id }, label,
    h("input", { id, name, type, value: params.get(name) || "", list, autocomplete: "off" }));
  filtersForm.append(...[
    h("label", { for: "f-range" }, "Time range", select),
    range === "custom" ? input("f-from", "from", "From", "date") : null,
    range === "custom" ? input("f-to", "to", "To", "date") : null,
    input("f-bot", "bot", "Bot", "text", "bots-seen"),
    input("f-operator", "operator", "Operator", "text", "operators-seen"),
    h("label", { for: "f-category" }, "Category",
      h("select", { id: "f-category", name: "category" },
        ["", "training", "search", "user_fetch", "agent", "human", "unknown"]
          .map((v) => h("option", { value: v, selected: v === (params.get("category") || "") }, v || "any")))),
    h("label", { for: "f-verified", class: "check" },
      h("input", { id: "f-verified", name: "verified", type: "checkbox", value: "true", checked: params.get("verified") === "true" }),
      "Verified identity only"),
    h("button", { type: "submit" }, "Apply"),
    h("datalist", { id: "bots-seen" }), h("datalist", { id: "operators-seen" })].filter(Boolean));
  select.addEventListener("change", () => filtersForm.requestSubmit());
}

filtersForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(filtersForm)) if (v) params.set(k, v);
  const keep = route().params;
  for (const k of ["status", "stage", "path", "search", "offset"]) if (keep.get(k)) params.set(k, keep.get(k));
  go(route().parts, params);
});

// Fills the filter suggestions with the bots and operators of the range (`known`: groups the
// view already has, by what they group, not asked for again).
async function suggest(client, f, known = {}) {
  const lists = [["bots-seen", "bot"], ["operators-seen", "operator"]];
  for (const [id, group] of lists) {
    const list = document.getElementById(id);
    if (!list) continue;
    const groups = known[group]
      ?? (await get(`/api/v1/clients/${client}/visits/stats`, { ...f, group_by: group, limit: 50 })).groups;
    list.replaceChildren(...groups.map((g) => h("option", { value: g.key })));
  }
}

// ---- views ---------------------------------------------------------------------------

const VIEWS = [["overview", "Overview"], ["activity", "AI activity"], ["reads", "What they read"],
  ["referrals", "What they send back"], ["pages", "Pages"]];

function drawNav(client, current) {
  nav.replaceChildren(h("ul", {}, VIEWS.map(([id, label]) => h("li", {},
    h("a", { href: `#/c/${client}/${id}?${route().params}`, "aria-current": id === current ? "page" : false }, label)))));
}

// Puts a view's parts in the page (absent parts, null or false, are skipped).
function show(...parts) {
  main.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));
}

function showError(error) {
  const message = error instanceof ApiError
    ? `${error.message} (${error.status} ${error.code})`
    : `Something went wrong: ${error.message}`;
  main.append(h("div", { role: "alert", class: "error" }, message));
  main.dataset.ready = "error";
}

function signIn(message) {
  nav.replaceChildren();
  filtersForm.hidden = true;
  clientSwitch.replaceChildren();
  signOut.hidden = true;
  const key = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "key-help" });
  const form = h("form", { id: "sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "ai-cache dashboard"),
    h("p", {}, "Which AI reads what, at a glance."),
    h("label", { for: "key" }, "API key"), key,
    h("p", { id: "key-help", class: "help" },
      "The master key sees every client; a client's key (aic_…, with the read scope) sees its own. ",
      "It is kept in this browser tab only, until you sign out or close it. ",
      "With scripts/dev, the master key is in .data/master_api_key (and in the link it prints)."),
    message ? h("p", { role: "alert", class: "error" }, message) : null,
    h("button", { type: "submit" }, "Open the dashboard"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, key.value.trim());
    me = null;
    landing = true;
    await render();
  });
  show(form);
  main.dataset.ready = "sign-in";
  key.focus();
}

// The service's health (`/health`: database, NATS, streams, consumers, dead letters) in a line.
async function serviceHealth() {
  const health = await fetch("/health").then((r) => r.json()).catch(() => null);
  if (!health) return h("p", { class: "health degraded" }, "Service health unknown: /health did not answer.");
  const why = health.reasons && health.reasons.length ? `: ${health.reasons.join("; ")}` : "";
  return h("p", { class: `health ${health.status}` }, `Service ${health.status}${why}`);
}

async function allClients(params) {
  drawFilters(params);
  nav.replaceChildren();
  const f = filters(params);
  const list = await get("/api/v1/clients", { limit: 100 });
  const rows = await Promise.all(list.clients.map(async (c) => {
    const [pages, stats] = await Promise.all([
      get(`/api/v1/sitemap/client/${c.id}/pages`, { limit: 1 }),
      get(`/api/v1/clients/${c.id}/visits/stats`, { ...f, limit: 1 }),
    ]);
    const stage = pages.counts.by_stage;
    return h("tr", { dataset: { client: c.id } },
      h("th", { scope: "row" }, h("a", { href: `#/c/${c.id}/overview?${params}` }, c.name)),
      h("td", {}, c.domain),
      h("td", {}, c.is_active ? "active" : "paused"),
      num(pages.total_pages), num(stage.live || 0), num(pages.counts.by_status.failed || 0),
      num(stats.totals.visits), num(stats.totals.ai_visits), num(stats.totals.ai_share, pct(stats.totals.ai_share)));
  }));
  const health = await serviceHealth();
  show(
    h("h1", {}, "All clients"),
    health,
    section(`Clients (${list.total})`, { path: "/api/v1/clients", params: { limit: 100 } },
      table("Every client, its pages and its visits in the range",
        ["Client", "Domain", "State", "Pages", "Live", "Failed", "Visits", "AI visits", "AI share"], rows,
        { empty: "No clients yet: register one with POST /api/v1/clients or `ai-cache clients add`." })));
}

async function overview(client, params) {
  const f = filters(params);
  const pagesPath = `/api/v1/sitemap/client/${client}/pages`;
  const every = interval(params);
  const seriesPath = `/api/v1/clients/${client}/visits/series`;
  const seriesParams = { ...f, interval: every, split: "category" };
  const [pages, failed, recent, stats, health, series] = await Promise.all([
    get(pagesPath, { limit: 1 }),
    get(pagesPath, { status: "failed", limit: 10 }),
    get(pagesPath, { sort: "updated", limit: 10 }),
    get(`/api/v1/clients/${client}/visits/stats`, { ...f, limit: 1 }),
    serviceHealth(),
    get(seriesPath, seriesParams),
  ]);
  const { by_status: status, by_stage: stage } = pages.counts;
  const active = pages.total_pages - (status.removed || 0);
  const live = stage.live || 0;
  const parts = [
    h("h1", {}, pages.client_name),
    health,
    h("div", { class: "cards" },
      card("Pages", pages.total_pages),
      card("Live for AI", live, null, active ? `${pct(live / active)} of pages not removed` : null),
      card("Failed", status.failed || 0),
      card("Blocked by robots.txt", status.blocked || 0),
      card("Removed", status.removed || 0),
      card("AI visits", stats.totals.ai_visits, null, `${pct(stats.totals.ai_share)} of ${fmt(stats.totals.visits)} visits`)),
    section(`Visits per ${every}`, { path: seriesPath, params: seriesParams, file: "visits-by-category.csv" },
      seriesChart(`Visits per ${every} by category (overview)`, series, every)),
    section("Pipeline", { path: pagesPath, params: { limit: 1 } },
      h("label", { for: "live-progress" }, `${fmt(live)} of ${fmt(active)} pages live`),
      h("progress", { id: "live-progress", max: active || 1, value: live }),
      h("div", { class: "two" },
        table("Pages by stage", ["Stage", "Pages"],
          ["discovered", "scraped", "markdown", "rendered", "uploaded", "live", "removed"]
            .filter((s) => stage[s]).map((s) => h("tr", { dataset: { stage: s } }, h("th", { scope: "row" }, s), num(stage[s])))),
        table("Pages by status", ["Status", "Pages"],
          Object.entries(status).map(([s, n]) => h("tr", { dataset: { status: s } }, h("th", { scope: "row" }, s), num(n)))))),
    section("Needs attention", { path: pagesPath, params: { status: "failed", limit: 10 }, file: "failed-pages.csv" },
      table("Pages whose last fetch failed", ["Page", "Error", "Last attempt"],
        failed.pages.map((p) => h("tr", {}, h("td", {}, pageLink(client, p.id, p.url)),
          h("td", {}, p.last_error || p.last_error_kind || "—"), h("td", {}, when(p.last_attempt_at)))),
        { empty: "No failed pages." })),
    section("Last updates", { path: pagesPath, params: { sort: "updated", limit: 10 }, file: "recent-pages.csv" },
      table("Pages changed most recently", ["Page", "Stage", "Changed"],
        recent.pages.map((p) => h("tr", {}, h("td", {}, pageLink(client, p.id, p.title || p.url)),
          h("td", {}, p.stage), h("td", {}, when(p.updated_at)))),
        { empty: "No pages yet." })),
  ];
  if (me.kind === "master") {
    const dead = await get("/api/v1/dead-letters", { client_id: client, limit: 100 }).catch(() => null);
    if (dead) {
      parts.push(section("Dead letters", { path: "/api/v1/dead-letters", params: { client_id: client, limit: 100 } },
        h("p", { dataset: { deadLetters: dead.items.length } },
          dead.items.length ? `${dead.items.length}${dead.next_after ? "+" : ""} messages of this client were set aside after failing; ` +
            "redrive them with POST /api/v1/dead-letters/redrive or `ai-cache dead-letters redrive`."
            : "No dead letters for this client.")));
    }
  }
  show(...parts);
}

async function activity(client, params) {
  const f = filters(params);
  const every = interval(params);
  const base = `/api/v1/clients/${client}/visits`;
  const statsOf = (group_by) => get(`${base}/stats`, { ...f, group_by, limit: 50 });
  const [bots, formats, statuses, checks, byCategory, byOperator] = await Promise.all([
    statsOf("bot"), statsOf("format"), statsOf("status"), statsOf("verification"),
    get(`${base}/series`, { ...f, interval: every, split: "category" }),
    get(`${base}/series`, { ...f, interval: every, split: "operator" }),
  ]);
  const t = bots.totals;
  show(
    h("h1", {}, "AI activity"),
    h("div", { class: "cards" },
      card("Visits", t.visits), card("AI visits", t.ai_visits), card("AI share", t.ai_share, pct(t.ai_share)),
      card("Verified identities", t.verified, null, `${fmt(t.ip_mismatch)} claimed from outside their operator's ranges`),
      card("Served from the cache", t.served_from_cache), card("Bytes served", t.bytes, bytes(t.bytes)),
      card("robots.txt violations", t.robots_violations)),
    section(`Visits per ${every} by category`, { path: `${base}/series`, params: { ...f, interval: every, split: "category" }, file: "visits-by-category.csv" },
      seriesChart(`Visits per ${every} by category`, byCategory, every)),
    section(`Visits per ${every} by operator`, { path: `${base}/series`, params: { ...f, interval: every, split: "operator" }, file: "visits-by-operator.csv" },
      seriesChart(`Visits per ${every} by operator`, byOperator, every)),
    h("div", { class: "three" },
      section("Format served", { path: `${base}/stats`, params: { ...f, group_by: "format", limit: 50 }, file: "visits-by-format.csv" },
        doughnut("Format served", formats.groups)),
      section("Status codes", { path: `${base}/stats`, params: { ...f, group_by: "status", limit: 50 }, file: "visits-by-status.csv" },
        doughnut("Status codes", statuses.groups)),
      section("Identity", { path: `${base}/stats`, params: { ...f, group_by: "verification", limit: 50 }, file: "visits-by-verification.csv" },
        doughnut("Identity", checks.groups))),
    section("Bots", { path: `${base}/stats`, params: { ...f, group_by: "bot", limit: 50 }, file: "visits-by-bot.csv" },
      table("Visits per bot", ["Bot", "Visits", "AI visits", "IP verified", "IP mismatch", "Bytes served", "Last visit"],
        bots.groups.map((g) => h("tr", { dataset: { key: g.key } }, h("th", { scope: "row" }, g.key), num(g.visits), num(g.ai_visits),
          num(g.ip_verified), num(g.ip_mismatch), num(g.bytes, bytes(g.bytes)), h("td", {}, when(g.last_visit_at)))))));
  await suggest(client, f, { bot: bots.groups });
}

async function reads(client, params) {
  const f = filters(params);
  const base = `/api/v1/clients/${client}/visits`;
  const [pages, sections, unread] = await Promise.all([
    get(`${base}/stats`, { ...f, group_by: "page", limit: 50 }),
    get(`${base}/stats`, { ...f, group_by: "section", limit: 20 }),
    get(`/api/v1/sitemap/client/${client}/pages`, { read_by_ai: false, limit: 50 }),
  ]);
  const top = (p) => h("tr", {}, h("td", {}, pageLink(client, p.page_id, p.url)), num(p.ai_visits), num(p.bots));
  show(
    h("h1", {}, "What they read"),
    h("div", { class: "two" },
      section("Pages AI agents read most", { path: `${base}/stats`, params: { ...f, limit: 1 } },
        table("Pages AI agents read most (answered below 400)", ["Page", "AI visits", "Bots"], pages.top_ai_pages.map(top))),
      section("Asked for, not there", { path: `${base}/stats`, params: { ...f, limit: 1 } },
        table("What AI agents asked for that is not a page (or failed)", ["URL", "AI visits", "Bots"], pages.top_ai_misses.map(top),
          { empty: "No misses." }))),
    section("By section", { path: `${base}/stats`, params: { ...f, group_by: "section", limit: 20 }, file: "visits-by-section.csv" },
      chart("Visits by section", "bar", sections.groups.map((g) => g.key), [
        { label: "AI visits", data: sections.groups.map((g) => g.ai_visits) },
        { label: "Other visits", data: sections.groups.map((g) => g.visits - g.ai_visits) }], { stacked: true })),
    section("Every page read", { path: `${base}/stats`, params: { ...f, group_by: "page", limit: 50 }, file: "visits-by-page.csv" },
      table("Visits per page", ["Page", "Visits", "AI visits", "Bytes served", "Last visit"],
        pages.groups.map((g) => h("tr", {}, h("td", {}, pageLink(client, g.page_id, g.key)), num(g.visits), num(g.ai_visits),
          num(g.bytes, bytes(g.bytes)), h("td", {}, when(g.last_visit_at)))))),
    section(`Never read by an AI bot (${unread.total_pages})`,
      { path: `/api/v1/sitemap/client/${client}/pages`, params: { read_by_ai: false, limit: 50 }, file: "pages-never-read.csv" },
      table("Pages no AI bot ever read", ["Page", "Stage"],
        unread.pages.map((p) => h("tr", {}, h("td", {}, pageLink(client, p.id, p.url)), h("td", {}, p.stage))),
        { empty: "Every page was read by an AI bot." })));
  await suggest(client, f);
}

async function referrals(client, params) {
  const f = filters(params);
  const path = `/api/v1/clients/${client}/visits/referrals`;
  const r = await get(path, f);
  const ratio = (x) => (x === null || x === undefined ? "no referrals" : `${x.toFixed(1)} : 1`);
  show(
    h("h1", {}, "What they send back"),
    h("div", { class: "cards" },
      card("Referred visits", r.total_referrals, null, "people who followed a link from an AI assistant"),
      card("AI crawls", r.total_crawls, null, "requests no person triggered"),
      card("Crawls per referral", r.total_referrals ? r.total_crawls / r.total_referrals : null,
        r.total_referrals ? ratio(r.total_crawls / r.total_referrals) : "no referrals")),
    section("Referrals per day", { path, params: f },
      seriesChart("Referred visits per day by assistant operator", r.per_day, "day")),
    section("Crawl-to-refer ratio", { path, params: f, file: "referrals.csv" },
      table("Per operator: its AI bots' crawls and the people its assistant referred",
        ["Operator", "Crawls", "Referrals", "Crawls per referral"],
        r.operators.map((o) => h("tr", { dataset: { operator: o.operator } }, h("th", { scope: "row" }, o.operator),
          num(o.crawls), num(o.referrals), num(o.crawl_to_refer, ratio(o.crawl_to_refer)))))));
}

async function pagesView(client, params) {
  const limit = 50;
  const offset = Number(params.get("offset") || 0);
  const q = { search: params.get("search"), status: params.get("status"), stage: params.get("stage"), path: params.get("path") };
  const path = `/api/v1/sitemap/client/${client}/pages`;
  const list = await get(path, { ...q, limit, offset });
  const form = h("form", { class: "page-filters", "aria-label": "Page filters" },
    h("label", { for: "p-search" }, "URL contains", h("input", { id: "p-search", name: "search", type: "search", value: q.search || "" })),
    h("label", { for: "p-path" }, "Path starts with", h("input", { id: "p-path", name: "path", value: q.path || "", placeholder: "/blog/" })),
    h("label", { for: "p-status" }, "Status", h("select", { id: "p-status", name: "status" },
      ["", ...Object.keys(list.counts.by_status)].map((s) => h("option", { value: s, selected: s === (q.status || "") }, s || "any")))),
    h("label", { for: "p-stage" }, "Stage", h("select", { id: "p-stage", name: "stage" },
      ["", ...Object.keys(list.counts.by_stage)].map((s) => h("option", { value: s, selected: s === (q.stage || "") }, s || "any")))),
    h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = route().params;
    for (const k of ["search", "path", "status", "stage"]) {
      const v = new FormData(form).get(k);
      if (v) next.set(k, v); else next.delete(k);
    }
    next.delete("offset");
    go(route().parts, next);
  });
  const page = (o) => { const p = route().params; p.set("offset", o); return `#/${route().parts.join("/")}?${p}`; };
  show(
    h("h1", {}, "Pages"), form,
    section(`${fmt(list.total_pages)} pages`, { path, params: { ...q, limit: 1000 }, file: "pages.csv" },
      table("The client's pages", ["Page", "Status", "Stage", "HTTP", "Last fetched", "Version"],
        list.pages.map((p) => h("tr", {}, h("td", {}, pageLink(client, p.id, p.url), p.title ? h("div", { class: "sub" }, p.title) : null),
          h("td", {}, p.status), h("td", {}, p.stage), num(p.last_http_status), h("td", {}, when(p.last_scraped_at)), num(p.version))),
        { empty: "No page matches." }),
      h("nav", { class: "pager", "aria-label": "Pages of the list" },
        offset > 0 ? h("a", { href: page(Math.max(0, offset - limit)) }, "← Previous") : null,
        h("span", {}, `${list.total_pages ? offset + 1 : 0}–${offset + list.pages.length} of ${fmt(list.total_pages)}`),
        offset + limit < list.total_pages ? h("a", { href: page(offset + limit) }, "Next →") : null)));
}

async function pageView(client, id, params) {
  const f = filters(params);
  const [page, history, visits] = await Promise.all([
    get(`/api/v1/pages/${id}`),
    get(`/api/v1/pages/${id}/events`, { limit: 200 }).catch(() => null),
    get(`/api/v1/clients/${client}/visits`, { ...f, page_id: id, limit: 50 }),
  ]);
  const content = h("div", { class: "content" });
  const showContent = async (format) => {
    for (const b of tabs.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.format === format));
    try {
      const body = await text(`/api/v1/pages/${id}/content`, { format: format === "preview" ? "html" : format });
      content.replaceChildren(format === "preview"
        // The page's minimal HTML, shown as it renders: in a sandbox, scripts off.
        ? h("iframe", { title: "Minimal HTML preview", sandbox: "", srcdoc: body })
        : h("pre", { tabindex: 0 }, body));
    } catch (e) {
      content.replaceChildren(h("p", { class: "empty" }, e.message));
    }
  };
  const tabs = h("div", { class: "tabs", role: "group", "aria-label": "What was served" },
    [["markdown", "Markdown"], ["preview", "Minimal HTML (preview)"], ["html", "Minimal HTML (source)"]]
      .map(([format, label]) => h("button", { type: "button", dataset: { format }, onclick: () => showContent(format) }, label)));
  show(
    h("p", {}, h("a", { href: `#/c/${client}/pages?${params}` }, "← Pages")),
    h("h1", {}, page.title || page.url),
    h("p", {}, h("a", { href: page.url, rel: "noreferrer noopener", target: "_blank" }, page.url)),
    h("dl", { class: "facts" },
      [["Status", page.status], ["Stage", page.stage], ["Version", page.version],
        ["Last HTTP status", page.last_http_status ?? "—"], ["Last fetched", when(page.last_scraped_at)],
        ["Last changed", when(page.last_changed_at)], ["Live since", when(page.last_updated_at)],
        ["Next refresh", when(page.next_due_at)], ["Last error", page.last_error || "—"]]
        .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    section("Served content", null, tabs, content),
    section("Event history", { path: `/api/v1/pages/${id}/events`, params: { limit: 200 } },
      history && history.items.length
        ? h("ol", { class: "timeline" }, history.items.map((e) => h("li", {},
          h("time", { datetime: e.stored_at }, when(e.stored_at)), " ", h("strong", {}, e.type), " ", e.summary)))
        : h("p", { class: "empty" }, "No events (or the event stream is unreachable).")),
    section(`Visits (${visits.visits.length}${visits.next ? "+" : ""})`,
      { path: `/api/v1/clients/${client}/visits`, params: { ...f, page_id: id, limit: 1000 }, file: "page-visits.csv" },
      table("The page's visits, newest first", ["When", "Visitor", "Operator", "Identity", "Served", "Status", "Bytes"],
        visits.visits.map((v) => h("tr", {}, h("td", {}, when(v.visited_at)), h("td", {}, v.bot_name || v.visitor_type),
          h("td", {}, v.operator || "—"), h("td", {}, v.verification), h("td", {}, v.format_served), num(v.status), num(v.bytes, bytes(v.bytes)))))));
  if (page.has_markdown) await showContent("markdown");
  else content.replaceChildren(h("p", { class: "empty" }, `Nothing served yet: the page is at the ${page.stage} stage.`));
}

// ---- the router ----------------------------------------------------------------------

async function drawClientSwitch(current, params) {
  if (me.kind !== "master") {
    clientSwitch.replaceChildren();
    return;
  }
  const list = await get("/api/v1/clients", { limit: 100 });
  const select = h("select", { id: "client", "aria-label": "Client" },
    h("option", { value: "" }, "All clients"),
    list.clients.map((c) => h("option", { value: c.id, selected: c.id === current }, `${c.name} (${c.domain})`)));
  select.addEventListener("change", () => go(select.value ? ["c", select.value, "overview"] : [], params));
  clientSwitch.replaceChildren(select);
}

async function render() {
  if (!sessionStorage.getItem(KEY)) return signIn();
  main.dataset.ready = "";
  show(h("p", { class: "loading", "aria-live": "polite" }, "Loading…"));
  try {
    if (!me) me = await get("/api/v1/me");
    signOut.hidden = false;
    const { parts, params } = route();
    if (parts[0] !== "c" || !parts[1]) {
      if (me.kind === "client") return go(["c", me.client_id, "overview"], params);
      // Signing in to a service with one client (the demo's) opens that client.
      if (landing) {
        landing = false;
        const list = await get("/api/v1/clients", { limit: 2 });
        if (list.total === 1) return go(["c", list.clients[0].id, "overview"], params);
      }
      await drawClientSwitch(null, params);
      await allClients(params);
      main.dataset.ready = "clients";
      return;
    }
    const [, client, view = "overview", id] = parts;
    await drawClientSwitch(client, params);
    drawNav(client, view === "page" ? "pages" : view);
    drawFilters(params);
    const views = { overview, activity, reads, referrals, pages: pagesView };
    if (view === "page" && id) await pageView(client, id, params);
    else await (views[view] || overview)(client, params);
    main.dataset.ready = view;
    document.title = `${view} · ai-cache dashboard`;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      sessionStorage.removeItem(KEY);
      me = null;
      return signIn("That key was not accepted: check it and try again.");
    }
    show();
    showError(error);
  }
}

signOut.addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  me = null;
  location.hash = "#/";
  signIn();
});

// `scripts/dev` prints a link carrying the dev master key in the fragment (never sent to a
// server): take it, then drop it from the address bar and the history.
const fragmentKey = new URLSearchParams(location.hash.replace(/^#/, "")).get("key");
if (fragmentKey) {
  sessionStorage.setItem(KEY, fragmentKey);
  history.replaceState(null, "", location.pathname + "#/");
}
window.addEventListener("hashchange", () => render());
render();
