// BaluPi's dashboard: every figure comes from the documented JSON API (docs/api.md).
// No framework, no build step, nothing from the internet; no inline scripts or styles (CSP 'self').
"use strict";

const REFRESH_S = 15;          // the light figures (state, power, today, cache)
const SLOW_REFRESH_S = 60;     // charts, lists, jobs
const TOKEN_KEY = "balupi.token";
const STATE_NAMES = {asleep: "Asleep", waking: "Waking", awake: "Awake", unreachable: "Unreachable",
  unknown: "Unknown", suspending: "Going to sleep", unconfigured: "Not configured"};
const KIND_NAMES = {request: "a client's request", sync: "changes to sync", prefetch: "prefetch", refresh: "refresh",
  manual: "woken by hand", plugin: "a plugin", external: "something else", found_awake: "found awake"};

let token = sessionStorage.getItem(TOKEN_KEY);
let me = null;
let openMode = false;
let period = "day";
let timer = null;
let tick = 0;

// -- small helpers -------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = tag.startsWith("svg:") ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Charts are drawn at the width they are shown (so their text stays readable on a phone).
function chartWidth(box) { return Math.max(280, Math.round(box.clientWidth || 720)); }

function fill(el, ...children) { el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined)); }
function text(id, value) { const el = $(id); if (el.textContent !== value) el.textContent = value; }

const fmt = {
  watts: (w) => (w === null || w === undefined ? "–" : `${Number(w).toFixed(1)} W`),
  kwh: (wh) => `${(wh / 1000).toFixed(3)} kWh`,
  money: (cents, cur) => `${(cents / 100).toFixed(2)} ${cur || ""}`.trim(),
  pct: (p) => (p === null || p === undefined ? "–" : `${Number(p).toFixed(1)} %`),
  bytes(b) {
    if (b === null || b === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0; let v = b;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  },
  time: (s) => (s ? new Date(s * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}) : "–"),
  when(s) {
    if (!s) return "–";
    const d = new Date(s * 1000);
    const today = new Date().toDateString() === d.toDateString();
    return today ? fmt.time(s) : d.toLocaleString([], {weekday: "short", hour: "2-digit", minute: "2-digit"});
  },
  duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  },
};

function toast(message, bad) {
  const el = $("toast");
  el.textContent = message;
  el.className = "toast" + (bad ? " bad" : "");
  el.hidden = false;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { el.hidden = true; }, 5000);
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = {method, headers, credentials: "omit", cache: "no-store"};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body || {});
  }
  const response = await fetch(`/api${path}`, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (response.status === 401 && !openMode) {
    logout("Your login has expired: please log in again.");
    throw new ApiError(401, "login needed");
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText);
  return data;
}

// Each panel asks its endpoints; a failure shows in that panel only.
async function safely(fn) {
  try { await fn(); } catch (e) { if (!(e instanceof ApiError && e.status === 401)) console.warn(e); }
}

// -- login ---------------------------------------------------------------------------------------

function showLogin(message) {
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
}

function logout(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  clearInterval(timer);
  showLogin(message);
}

async function login(ev) {
  ev.preventDefault();
  const form = new FormData(ev.target);
  try {
    const answer = await api("POST", "/auth/login", {username: form.get("username"), password: form.get("password")});
    token = answer.access_token;
    sessionStorage.setItem(TOKEN_KEY, token);
    ev.target.reset();
    await start();
  } catch (e) {
    showLogin(e.status === 401 ? "Wrong user name or password." : e.message);
  }
}

async function start() {
  let health;
  try {
    health = await (await fetch("/api/health", {cache: "no-store"})).json();
  } catch (e) {
    showLogin("BaluPi does not answer.");
    return;
  }
  openMode = !health.nas.configured;
  if (!openMode && !token) { showLogin(); return; }
  try {
    const who = await api("GET", "/auth/me");
    me = who.user;
  } catch (e) {
    if (!openMode) { logout(e.status === 401 ? "" : e.message); return; }
    throw e;
  }
  document.body.classList.toggle("is-admin", me.role === "admin");
  text("who", openMode ? (me.role === "admin" ? "on the Pi (admin)" : "guest") : `${me.username}${me.role === "admin" ? " (admin)" : ""}`);
  $("logout").hidden = openMode;
  $("login").hidden = true;
  $("dash").hidden = false;
  $("dav-url").textContent = `${location.origin}/dav/`;
  await refresh(true);
  clearInterval(timer);
  timer = setInterval(() => refresh(false), REFRESH_S * 1000);
}

async function refresh(all) {
  tick++;
  const slow = all || tick % Math.round(SLOW_REFRESH_S / REFRESH_S) === 0;
  const jobs = [safely(nasNow), safely(energyNow), safely(cacheNow)];
  if (slow) jobs.push(safely(timeline), safely(wakes), safely(energyChart), safely(pins), safely(conflicts), safely(pi));
  await Promise.all(jobs);
  text("updated", `updated ${new Date().toLocaleTimeString()}`);
  document.body.dataset.loaded = String(tick);
}

// -- the NAS ---------------------------------------------------------------------------------------

async function nasNow() {
  const nas = await api("GET", "/nas/status");
  const banner = $("banner");
  if (!nas.configured) {
    text("nas-state", "Not configured");
    text("nas-since", "no NAS is set up: BaluPi serves what its cache holds");
    banner.hidden = false;
    banner.textContent = "No NAS is configured yet (BALUPI_NAS_WEBDAV_URL): the share serves only what the Pi holds. See docs/operations.md.";
    $("wake").disabled = true; $("sync-now").disabled = true;
  } else {
    banner.hidden = true;
    text("nas-state", STATE_NAMES[nas.nas_state] || nas.nas_state);
    $("nas-state").dataset.state = nas.nas_state;
    text("nas-since", `since ${fmt.when(nas.since)}`);
    $("wake").disabled = !nas.wol_configured; $("sync-now").disabled = false;
  }
  const last = (nas.transitions || [])[0];
  text("nas-message", nas.configured ? (last ? `Last change: ${last.from} → ${last.to} (${last.cause})` : "") : "");
}

async function timeline() {
  const tl = await api("GET", "/nas/timeline");
  const box = $("timeline");
  if (!tl.configured) { fill(box, h("p", {class: "muted"}, "No NAS configured: no timeline.")); return; }
  const W = chartWidth(box), H = 120, top = 8, band = 26, plotTop = top + band + 8, plotH = H - plotTop - 18;
  const x = (t) => ((t - tl.from) / (tl.to - tl.from)) * W;
  const svg = h("svg:svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "The NAS's states today"});
  for (let hr = 0; hr <= 24; hr += W < 500 ? 6 : 3) {
    const gx = (hr / 24) * W;
    svg.append(h("svg:line", {x1: gx, x2: gx, y1: top, y2: H - 16, class: "grid"}));
    svg.append(h("svg:text", {x: Math.min(gx + 2, W - 18), y: H - 4}, `${String(hr).padStart(2, "0")}h`));
  }
  for (const iv of tl.intervals) {
    const r = h("svg:rect", {x: x(iv.start), y: top, width: Math.max(2, x(iv.end) - x(iv.start)), height: band,
      class: `st-${iv.state}`});
    r.append(h("svg:title", {}, `${STATE_NAMES[iv.state] || iv.state} ${fmt.time(iv.start)}–${fmt.time(iv.end)}: ${iv.cause || ""}`));
    svg.append(r);
  }
  if (tl.power.length) {
    const maxW = Math.max(10, ...tl.power.map((p) => p.max_power_w));
    const bw = Math.max(1.5, x(tl.from + tl.power_bucket_s) - x(tl.from));
    for (const p of tl.power) {
      const bh = Math.max(1, (p.avg_power_w / maxW) * plotH);
      const r = h("svg:rect", {x: x(p.at), y: plotTop + plotH - bh, width: bw, height: bh, class: "pbar"});
      r.append(h("svg:title", {}, `${fmt.time(p.at)}: ${fmt.watts(p.avg_power_w)} on average, ${fmt.watts(p.max_power_w)} at most`));
      svg.append(r);
    }
    svg.append(h("svg:text", {x: 2, y: plotTop + 9}, `${maxW.toFixed(0)} W`));
  } else {
    svg.append(h("svg:text", {x: 4, y: plotTop + 14}, "no plug reads the NAS's power"));
  }
  for (const w of tl.wakes) {
    const c = h("svg:circle", {cx: x(w.requested_at), cy: top + band / 2, r: 6, class: "mark", tabindex: 0,
      "data-kind": w.cause.kind});
    c.append(h("svg:title", {}, `${fmt.time(w.requested_at)} ${w.cause.summary}`));
    const show = () => {
      svg.querySelectorAll(".mark.sel").forEach((m) => m.classList.remove("sel"));
      c.classList.add("sel");
      text("timeline-detail", `${fmt.time(w.requested_at)}: ${w.cause.summary}; awake ${fmt.duration(w.awake_s)}`);
    };
    c.addEventListener("click", show);
    c.addEventListener("mouseenter", show);
    c.addEventListener("focus", show);
    svg.append(c);
  }
  fill(box, svg);
}

function wakeLine(w) {
  const used = w.used_for;
  const did = [];
  if (used.files_prefetched) did.push(`${used.files_prefetched} files (${fmt.bytes(used.bytes_prefetched)}) fetched ahead`);
  if (used.changes_synced) did.push(`${used.changes_synced} changes synced`);
  const stay = w.woke ? `awake ${fmt.duration(w.awake_s)}${w.ongoing ? " so far" : ""}` : (w.ongoing ? "waking" : "did not wake");
  return h("li", {class: "wake", "data-kind": w.cause.kind, "data-id": w.id},
    h("span", {class: "grow"}, h("b", {}, fmt.when(w.requested_at)), " ", w.cause.summary,
      h("br"), h("span", {class: "muted"}, stay + (did.length ? `; ${did.join(", ")}` : ""))));
}

async function wakes() {
  const answer = await api("GET", "/nas/wakes");
  if (!answer.configured) {
    fill($("wake-kinds"), h("span", {class: "muted"}, "No NAS configured."));
    fill($("wake-paths")); fill($("wake-list"));
    return;
  }
  const kinds = Object.entries(answer.by_kind).sort((a, b) => b[1] - a[1]);
  fill($("wake-kinds"), kinds.length ? kinds.map(([k, n]) => h("span", {class: "chip", "data-kind": k}, `${KIND_NAMES[k] || k}: ${n}`))
    : h("span", {class: "muted"}, "The NAS was not woken in the last 7 days."));
  const admin = me && me.role === "admin";
  fill($("wake-paths"), answer.paths.length ? answer.paths.slice(0, 20).map((p) => h("li", {class: "wake-path", "data-path": p.path},
    h("span", {class: "grow"}, p.path), h("span", {class: "muted"}, `${p.wakes}×`),
    admin ? h("button", {class: "small pin", "data-path": p.path, onclick: () => pin(p.path)}, "Pin") : null))
    : h("li", {class: "muted"}, admin ? "No file woke it." : "Only admins see which files woke it."));
  fill($("wake-list"), answer.wakes.length ? answer.wakes.slice(0, 15).map(wakeLine) : h("li", {class: "muted"}, "No wakes."));
}

// -- energy ----------------------------------------------------------------------------------------

function energyOff(message) {
  $("energy-off").hidden = false;
  $("energy-off").textContent = message;
  $("energy-on").hidden = true;
  text("nas-power", "–");
  text("total-power", message.length < 40 ? message : "no plug");
  text("today-kwh", "–");
  text("today-cost", "no plug");
}

async function energyNow() {
  let current, summary;
  try {
    [current, summary] = await Promise.all([api("GET", "/energy/current"), api("GET", "/energy/summary")]);
  } catch (e) {
    if (e.status === 503) { energyOff("Energy monitoring is off (BALUPI_ENERGY_ENABLED=false)."); return; }
    throw e;
  }
  if (!current.devices.length) {
    energyOff("No plug is added yet: add a Tapo plug to see power, energy and cost.");
    return;
  }
  $("energy-off").hidden = true;
  $("energy-on").hidden = false;
  const nasPlug = current.devices.find((d) => d.role === "nas");
  text("nas-power", nasPlug ? (nasPlug.is_online ? fmt.watts(nasPlug.power_w) : "offline") : "no NAS plug");
  text("total-power", `all plugs ${fmt.watts(current.total_power_w)}`);
  text("today-kwh", fmt.kwh(summary.today.energy_wh));
  text("today-cost", `${fmt.money(summary.today.cost_cents, summary.currency)} · month ${fmt.money(summary.month.cost_cents, summary.currency)}`);
  fill($("plugs"), current.devices.map((d) => h("li", {"data-plug": d.device_id},
    h("span", {class: "grow"}, h("b", {}, d.device_name), ` (${d.role})`),
    h("span", {class: d.is_online ? "ok" : "bad"}, d.is_online ? fmt.watts(d.power_w) : `offline${d.error_kind ? `: ${d.error_kind}` : ""}`))));
}

async function energyChart() {
  let costs, savings, prices;
  try {
    [costs, savings, prices] = await Promise.all([api("GET", `/energy/costs?period=${period}`),
      api("GET", "/energy/savings?period=month"), api("GET", "/energy/prices")]);
  } catch (e) {
    if (e.status === 503) return;
    throw e;
  }
  text("tariff-now", prices.current ? `Now: ${prices.current.price_cents_per_kwh} ct/kWh (${prices.current.name || "tariff"})`
    : `Now: ${prices.default_price_cents_per_kwh} ct/kWh (default price)`);
  text("period-total", `${costs.energy_kwh.toFixed(3)} kWh · ${fmt.money(costs.total_cost_cents, costs.currency)}`);
  text("savings", savings.available ? `Sleeping saved ${(savings.total.net_saved_wh / 1000).toFixed(2)} kWh (${fmt.money(savings.total.net_saved_cents, savings.currency)}) this month, net of the Pi.`
    : `Savings: ${savings.detail}`);
  const pts = costs.points;
  const box = $("energy-chart");
  if (!pts.length) { fill(box, h("p", {class: "muted"}, "No energy measured in this period yet.")); return; }
  const W = chartWidth(box), H = 150, bottom = 18, maxWh = Math.max(1, ...pts.map((p) => p.energy_wh));
  const bw = W / pts.length;
  const svg = h("svg:svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Energy per bucket"});
  pts.forEach((p, i) => {
    const bh = (p.energy_wh / maxWh) * (H - bottom - 12);
    const r = h("svg:rect", {x: i * bw + 1, y: H - bottom - bh, width: Math.max(1, bw - 2), height: bh, class: "bar"});
    const label = period === "day" ? p.timestamp.slice(11, 16) : p.timestamp.slice(5, 10);
    r.append(h("svg:title", {}, `${label}: ${(p.energy_wh / 1000).toFixed(3)} kWh, ${fmt.money(p.cost_cents, costs.currency)}`));
    svg.append(r);
    if (i % Math.ceil(pts.length / (W < 500 ? 4 : 8)) === 0) svg.append(h("svg:text", {x: i * bw + 2, y: H - 4}, label));
  });
  svg.append(h("svg:text", {x: 2, y: 10}, `${(maxWh / 1000).toFixed(3)} kWh`));
  fill(box, svg);
}

// -- cache -----------------------------------------------------------------------------------------

async function cacheNow() {
  const [stats, jobs] = await Promise.all([api("GET", "/cache/stats"), api("GET", "/system/jobs")]);
  text("hit-rate", fmt.pct(stats.hit_rate_percent));
  text("cache-use", `${fmt.bytes(stats.total_size_mb * 1e6)} of ${fmt.bytes(stats.max_size_gb * 1e9)}`);
  text("pending", String(stats.pending_changes));
  text("conflict-count", stats.pending_changes ? `oldest since ${fmt.when(stats.oldest_pending_change)}` :
    (stats.conflicts.unresolved ? `${stats.conflicts.unresolved} conflicts` : "all synced"));
  $("cache-bar").style.width = `${Math.min(100, stats.usage_percent)}%`;  // CSSOM, allowed by the CSP
  text("cache-line", `${stats.total_files} files, ${fmt.bytes(stats.total_size_mb * 1e6)} of ${fmt.bytes(stats.max_size_gb * 1e9)} (${fmt.pct(stats.usage_percent)}); ` +
    `hit rate ${fmt.pct(stats.hit_rate_percent)} (${stats.requests.hits} hits, ${stats.requests.misses} misses); ` +
    `${stats.pending_changes} changes wait for the NAS (${fmt.bytes(stats.dirty_bytes)})`);
  const job = jobs.jobs.find((j) => j.name === "prefetch");
  text("prefetch-line", job && job.last_started ? `Last prefetch ${fmt.when(job.last_started)} (${job.last_error ? `failed: ${job.last_error}` : "ok"})`
    : "No prefetch has run yet (it runs whenever the NAS is awake).");
  renderJobs(jobs.jobs);
}

async function pins() {
  const answer = await api("GET", "/cache/pins");
  const admin = me && me.role === "admin";
  fill($("pins"), answer.pins.length ? answer.pins.map((p) => h("li", {class: "pinned", "data-pattern": p.pattern},
    h("span", {class: "grow"}, p.pattern, h("br"), h("span", {class: "muted"},
      `${p.cached_files} of ${p.files} files on the Pi (${fmt.bytes(p.cached_bytes)})${p.source === "settings" ? " · from the settings" : ""}`)),
    admin && p.source === "api" ? h("button", {class: "small ghost", onclick: () => unpin(p.pattern)}, "Unpin") : null))
    : h("li", {class: "muted"}, "Nothing pinned."));
}

async function conflicts() {
  const answer = await api("GET", "/cache/conflicts?unresolved=1&limit=20");
  fill($("conflicts"), answer.conflicts.length ? answer.conflicts.map((c) => h("li", {},
    h("span", {class: "grow"}, h("b", {}, c.path), h("br"), h("span", {class: "muted"},
      `the NAS's copy stays at ${c.path}; the Pi's copy was saved as ${c.conflict_path} (${fmt.when(c.at)})`))))
    : h("li", {class: "muted"}, "No conflicts."));
}

async function pin(path) {
  try {
    const answer = await api("POST", "/cache/pins", {path});
    toast(`Pinned ${answer.pattern}: it stays on the Pi.`);
    await pins();
  } catch (e) { toast(`Could not pin: ${e.message}`, true); }
}

async function unpin(pattern) {
  try {
    await api("DELETE", `/cache/pins?pattern=${encodeURIComponent(pattern)}`);
    toast(`Unpinned ${pattern}.`);
    await pins();
  } catch (e) { toast(`Could not unpin: ${e.message}`, true); }
}

// -- the Pi ------------------------------------------------------------------------------------------

async function pi() {
  const s = await api("GET", "/system/status");
  const fig = (label, value) => h("div", {}, h("span", {class: "muted"}, label), h("b", {}, value));
  fill($("pi"), fig("CPU", fmt.pct(s.cpu_percent)),
    fig("Temperature", s.cpu_temp_celsius === null ? "–" : `${s.cpu_temp_celsius.toFixed(1)} °C`),
    fig("Memory", `${fmt.pct(s.memory_percent)} of ${s.memory_total_mb.toFixed(0)} MB`),
    fig("Disk (cache)", `${fmt.pct(s.disk_percent)} of ${s.disk_total_gb.toFixed(0)} GB`),
    fig("BaluPi's memory", `${s.process_rss_mb.toFixed(1)} MB`),
    fig("Pi up for", fmt.duration(s.uptime_seconds)));
}

function renderJobs(jobs) {
  fill($("jobs").tBodies[0], jobs.map((j) => h("tr", {},
    h("td", {}, j.name), h("td", {}, j.running ? "running" : fmt.when(j.last_started)),
    h("td", {}, j.last_duration_s === null ? "–" : `${j.last_duration_s.toFixed(2)} s`),
    h("td", {class: j.last_error ? "bad" : "ok"}, j.last_error ? j.last_error : (j.runs ? "ok" : "not run yet")))));
}

// -- admin actions -------------------------------------------------------------------------------------

async function action(button, fn, done) {
  button.disabled = true;
  try { const answer = await fn(); toast(done(answer)); await refresh(true); } catch (e) { toast(e.message, true); } finally { button.disabled = false; }
}

function wire() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout());
  $("wake").addEventListener("click", (ev) => action(ev.target, () => api("POST", "/nas/wol"),
    (a) => (a.wake_started ? `Waking the NAS (about ${a.expected_boot_s} s).` : `The NAS is ${a.previous_state}.`)));
  $("sync-now").addEventListener("click", (ev) => action(ev.target, () => api("POST", "/cache/sync", {wake: true}),
    (a) => `Sync started: ${a.pending_changes} changes wait.`));
  $("period-tabs").addEventListener("click", (ev) => {
    if (!ev.target.dataset.period) return;
    period = ev.target.dataset.period;
    $("period-tabs").querySelectorAll("button").forEach((b) => b.classList.toggle("on", b === ev.target));
    safely(energyChart);
  });
  $("pin-form").addEventListener("submit", (ev) => { ev.preventDefault(); pin(new FormData(ev.target).get("path")); ev.target.reset(); });
  $("plug-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = {host: f.get("host"), name: f.get("name") || null, role: f.get("role")};
    if (f.get("port")) body.port = Number(f.get("port"));
    action(ev.submitter || ev.target, () => api("POST", "/tapo/devices", body), (d) => `Added ${d.name} (${d.model || "plug"}).`);
  });
  $("discover").addEventListener("click", (ev) => action(ev.target, () => api("POST", "/tapo/devices/discover"), (a) => {
    fill($("discovered"), a.devices.length ? a.devices.map((d) => h("li", {}, h("span", {class: "grow"}, `${d.name || d.model} at ${d.host}`),
      d.added_as ? h("span", {class: "muted"}, "added") : h("button", {class: "small", onclick: () => {
        $("plug-form").elements.host.value = d.host;
        if (d.port && d.port !== 80) $("plug-form").elements.port.value = d.port;
        $("plug-form").elements.name.value = d.name || "";
      }}, "Use"))) : h("li", {class: "muted"}, "No plug answered."));
    return `${a.devices.length} plug(s) found.`;
  }));
  $("tariff-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = {name: f.get("name"), valid_from: f.get("valid_from"), price_cents_per_kwh: Number(f.get("price_cents_per_kwh"))};
    if (f.get("standing_charge_cents_per_day")) body.standing_charge_cents_per_day = Number(f.get("standing_charge_cents_per_day"));
    action(ev.submitter || ev.target, () => api("POST", "/energy/prices", body), (a) => `Tariff saved; ${a.repriced_hours} hours repriced.`);
  });
}

document.addEventListener("DOMContentLoaded", () => { wire(); start(); });
