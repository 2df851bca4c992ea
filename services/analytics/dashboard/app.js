// The usage dashboard: reads the analytics API with the visitor's API key.
// The key arrives in the URL fragment (#key=..., never sent to a server) or
// from the sign-in form, and is kept in sessionStorage for this tab only.
"use strict";

const API = "/v1/analytics";
const $ = (id) => document.getElementById(id);
const state = {key: null, logCursor: null, loading: 0};

const fmt = {
  int: (v) => (v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-US")),
  usd: (v) => (v === null || v === undefined ? "–" : v >= 1 ? `$${v.toFixed(2)}` : `$${v.toPrecision(3)}`),
  ms: (v) => (v === null || v === undefined ? "–" : `${v >= 100 ? Math.round(v) : v.toFixed(1)} ms`),
  pct: (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`),
  usdAxis: (v) => (v === 0 ? "$0" : v < 0.001 ? `$${v.toExponential(1)}` : `$${v.toPrecision(2)}`),
  num: (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)),
  label: (v) => (v === "" || v === null || v === undefined ? "(none)" : String(v)),
};

function takeKey() {
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (match) {
    sessionStorage.setItem("switchyard-key", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("switchyard-key");
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
  }
}

async function get(path, params) {
  const query = new URLSearchParams();
  for (const [k, v] of params) if (v !== "" && v !== null && v !== undefined) query.append(k, v);
  const response = await fetch(`${API}/${path}?${query}`, {headers: {authorization: `Bearer ${state.key}`}});
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function filters() {
  const params = [["since", $("range").value]];
  for (const name of ["model", "provider", "key"]) params.push([name, $(`f-${name}`).value]);
  const tag = $("f-tag").value.trim();
  if (tag.includes("=")) {
    const at = tag.indexOf("=");
    params.push([`tag.${tag.slice(0, at).trim()}`, tag.slice(at + 1).trim()]);
  }
  return params;
}

function bucketFor(range) {
  return {"1h": "minute", "6h": "minute", "24h": "hour", "7d": "hour", "30d": "day"}[range] || "hour";
}

function fillSelect(select, values, keep) {
  const current = select.value;
  select.textContent = "";
  const all = document.createElement("option");
  all.value = "";
  all.textContent = "all";
  select.appendChild(all);
  for (const v of values) {
    const option = document.createElement("option");
    option.value = String(v);
    option.textContent = fmt.label(v);
    select.appendChild(option);
  }
  if (keep && [...select.options].some((o) => o.value === current)) select.value = current;
}

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value;
  row.appendChild(td);
}

function renderKpis(t) {
  $("kpi-requests").textContent = fmt.int(t.requests);
  $("kpi-cost").textContent = fmt.usd(t.cost_usd);
  $("kpi-tokens").textContent = `${fmt.int(t.prompt_tokens)} / ${fmt.int(t.completion_tokens)}`;
  $("kpi-errors").textContent = fmt.pct(t.error_rate);
  $("kpi-latency").textContent = `${fmt.ms(t.latency_p50_ms)} / ${fmt.ms(t.latency_p95_ms)} / ${fmt.ms(t.latency_p99_ms)}`;
  $("kpi-ttft").textContent = `${fmt.ms(t.ttft_p50_ms)} / ${fmt.ms(t.ttft_p95_ms)}`;
  $("kpi-cache").textContent = fmt.pct(t.cache_hit_rate);
}

function renderSeries(split, total) {
  const group = $("group").value;
  for (const node of document.querySelectorAll(".group-name")) node.textContent = group;
  const opts = {bucketMs: split.bucket_ms};
  const bySplit = (metric) => split.series.map((s) => ({label: fmt.label(s.key[group]), values: s[metric]}));
  Charts.timeChart($("chart-cost"), split.buckets, bySplit("cost_usd"),
                   {...opts, kind: "stacked", format: fmt.usd, axisFormat: fmt.usdAxis});
  Charts.timeChart($("chart-requests"), split.buckets, bySplit("requests"),
                   {...opts, kind: "stacked", format: fmt.int, axisFormat: fmt.num});
  const one = total.series[0];
  Charts.timeChart($("chart-latency"), total.buckets, ["p50", "p95", "p99"].map((p) => (
    {label: p, values: one[`latency_${p}_ms`]})), {...opts, format: fmt.ms, legend: true});
  Charts.timeChart($("chart-ttft"), total.buckets, ["p50", "p95", "p99"].map((p) => (
    {label: p, values: one[`ttft_${p}_ms`]})), {...opts, format: fmt.ms, legend: true});
  Charts.timeChart($("chart-errors"), total.buckets, [{label: "error rate", values: one.error_rate}],
                   {...opts, format: fmt.pct});
  Charts.timeChart($("chart-cache"), total.buckets, [{label: "cache hit rate", values: one.cache_hit_rate}],
                   {...opts, format: fmt.pct});
}

async function renderTops(base) {
  const [keys, users, tagNames] = await Promise.all([
    get("summary", [...base, ["group_by", "key"], ["order", "cost_usd"], ["limit", "8"]]),
    get("summary", [...base, ["group_by", "end_user"], ["order", "cost_usd"], ["limit", "8"]]),
    get("tags", [...base, ["limit", "4"]]),
  ]);
  Charts.barChart($("top-keys"), keys.groups.map((g) => ({label: fmt.label(g.key.key), value: g.cost_usd})),
                  {format: fmt.usd});
  Charts.barChart($("top-users"), users.groups.map((g) => ({label: fmt.label(g.key.end_user), value: g.cost_usd})),
                  {format: fmt.usd, color: Charts.PALETTE[2]});
  const pairs = [];
  for (const tag of tagNames.data) {
    const values = await get("summary", [...base, ["group_by", `tag.${tag.tag}`], ["limit", "4"]]);
    for (const g of values.groups) pairs.push({label: `${tag.tag}=${fmt.label(g.key[`tag.${tag.tag}`])}`,
                                              value: g.requests});
  }
  pairs.sort((a, b) => b.value - a.value);
  Charts.barChart($("top-tags"), pairs.slice(0, 10), {format: fmt.int, color: Charts.PALETTE[4]});
}

async function renderExperiment(base) {
  const withArms = await get("summary", [...base, ["group_by", "route,arm"], ["limit", "200"]]);
  const names = [...new Set(withArms.groups.filter((g) => g.key.route && g.key.arm).map((g) => g.key.route))];
  const select = $("exp-route");
  const current = select.value;
  select.textContent = "";
  for (const name of names) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.appendChild(option);
  }
  if (names.includes(current)) select.value = current;
  $("exp-empty").hidden = names.length > 0;
  $("exp-table").hidden = names.length === 0;
  const body = $("exp-table").querySelector("tbody");
  if (!names.length) {
    body.textContent = "";
    for (const id of ["exp-cost", "exp-latency", "exp-errors"]) $(id).textContent = "";
    return;
  }
  const route = select.value;
  const versions = await get("summary", [...base, ["route", route], ["group_by", "version"], ["limit", "50"]]);
  const versionSelect = $("exp-version");
  const keep = versionSelect.value;
  fillSelect(versionSelect, versions.groups.map((g) => g.key.version).sort((a, b) => b - a), true);
  if (keep && [...versionSelect.options].some((o) => o.value === keep)) versionSelect.value = keep;
  const arms = await get("summary", [...base, ["route", route], ["version", versionSelect.value],
                                     ["group_by", "arm"], ["limit", "50"]]);
  const rows = arms.groups.filter((g) => g.key.arm).sort((a, b) => String(a.key.arm).localeCompare(b.key.arm));
  const fresh = [];
  for (const g of rows) {
    const tr = document.createElement("tr");
    tr.dataset.arm = g.key.arm;
    for (const v of [g.key.arm, fmt.int(g.requests), fmt.usd(g.cost_usd), fmt.usd(g.cost_usd / g.requests),
                     fmt.ms(g.latency_p50_ms), fmt.ms(g.latency_p95_ms), fmt.ms(g.ttft_p50_ms), fmt.pct(g.error_rate)]) {
      cell(tr, v);
    }
    fresh.push(tr);
  }
  body.replaceChildren(...fresh);  // in one step: a reader never sees a half-built table
  $("exp-table").dataset.route = route;
  const bars = (metric, format, color) => rows.map((g, i) => ({label: g.key.arm, value: metric(g),
                                                               color: color || Charts.PALETTE[i % 10]}));
  Charts.barChart($("exp-cost"), bars((g) => g.cost_usd / g.requests), {format: fmt.usd});
  Charts.barChart($("exp-latency"), bars((g) => g.latency_p95_ms), {format: fmt.ms});
  Charts.barChart($("exp-errors"), bars((g) => g.error_rate), {format: fmt.pct});
}

async function renderLog(base, more) {
  const params = [...base, ["limit", "50"]];
  if (more && state.logCursor) params.push(["cursor", state.logCursor]);
  const page = await get("requests", params);
  const body = $("log").querySelector("tbody");
  if (!more) body.textContent = "";
  for (const r of page.data) {
    const tr = document.createElement("tr");
    const tags = Object.entries(r.tags).map(([k, v]) => `${k}=${v}`).join(" ");
    for (const v of [new Date(r.ts_ms).toISOString().replace("T", " ").slice(0, 19), r.request_id, r.key_id,
                     r.model || r.model_requested, r.provider, r.status === "ok" ? "ok" : `${r.status} ${r.http_status}`,
                     `${fmt.int(r.prompt_tokens)} / ${fmt.int(r.completion_tokens)}`, fmt.usd(r.cost_usd),
                     fmt.ms(r.latency_ms), r.ttft_ms ? fmt.ms(r.ttft_ms) : "–", tags]) {
      cell(tr, v);
    }
    body.appendChild(tr);
  }
  state.logCursor = page.next_cursor;
  $("log-more").hidden = !page.next_cursor;
}

async function refresh() {
  const base = filters();
  const group = $("group").value;
  const bucket = bucketFor($("range").value);
  const since = [["since", $("range").value]];
  state.loading++;
  $("state").textContent = "loading…";
  try {
    const [summary, split, total, models, providers, keys] = await Promise.all([
      get("summary", base),
      get("timeseries", [...base, ["group_by", group], ["bucket", bucket], ["order", "cost_usd"]]),
      get("timeseries", [...base, ["bucket", bucket]]),
      get("summary", [...since, ["group_by", "model"], ["limit", "100"]]),
      get("summary", [...since, ["group_by", "provider"], ["limit", "100"]]),
      get("summary", [...since, ["group_by", "key"], ["limit", "100"]]),
    ]);
    fillSelect($("f-model"), models.groups.map((g) => g.key.model), true);
    fillSelect($("f-provider"), providers.groups.map((g) => g.key.provider), true);
    fillSelect($("f-key"), keys.groups.map((g) => g.key.key), true);
    renderKpis(summary.totals);
    renderSeries(split, total);
    await Promise.all([renderTops(base), renderExperiment(base), renderLog(base, false)]);
    $("state").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (err) {
    if (err.status === 401) return signIn("That key was not accepted.");
    $("state").textContent = `error: ${err.message}`;
  } finally {
    state.loading--;
  }
}

function signIn(message) {
  sessionStorage.removeItem("switchyard-key");
  state.key = null;
  $("main").hidden = true;
  $("signin").hidden = false;
  $("state").textContent = message || "";
}

function show() {
  state.key = takeKey();
  if (!state.key) return signIn();
  $("signin").hidden = true;
  $("main").hidden = false;
  refresh();
}

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("switchyard-key", $("key").value.trim());
    $("key").value = "";
    show();
  });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  for (const id of ["range", "group", "f-model", "f-provider", "f-key"]) $(id).onchange = refresh;
  $("exp-route").onchange = () => renderExperiment(filters());
  $("exp-version").onchange = () => renderExperiment(filters());
  $("log-more").onclick = () => renderLog(filters(), true);
  show();
}

document.addEventListener("DOMContentLoaded", start);
