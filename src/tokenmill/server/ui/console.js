// tokenmill's console: a playground over /v1/chat/completions and a dashboard over
// /metrics and /v1/monitoring/drift. No build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "tokenmill.key";
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
let history = [];
let controller = null;

function headers(extra = {}) {
  const h = { ...extra };
  if (apiKey) h["Authorization"] = "Bearer " + apiKey;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers) });
  if (response.status === 401) {
    askForKey(apiKey ? "That key was refused." : "");
    throw new Error("unauthorized");
  }
  return response;
}

function askForKey(message) {
  $("key-form").hidden = false;
  $("playground").hidden = true;
  $("dashboard").hidden = true;
  $("key-error").textContent = message;
}

$("key-submit").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("key-input").value.trim();
  sessionStorage.setItem(KEY_STORE, apiKey);
  $("key-form").hidden = true;
  start();
});

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => show(tab.dataset.view));
}

function show(view) {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
  $("playground").hidden = view !== "playground";
  $("dashboard").hidden = view !== "dashboard";
}

async function start() {
  try {
    const models = await (await api("/v1/models")).json();
    const select = $("model");
    select.innerHTML = "";
    for (const m of models.data) {
      const option = document.createElement("option");
      option.value = option.textContent = m.id;
      select.appendChild(option);
    }
    $("conn").textContent = "connected";
    show("playground");
    poll();
  } catch (error) {
    if (error.message !== "unauthorized") $("conn").textContent = "cannot reach the server";
  }
}

// ---- playground ---------------------------------------------------------------------

function requestBody() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    model: $("model").value,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

function curlOf(body) {
  const auth = apiKey ? ` \\\n  -H "Authorization: Bearer $TOKENMILL_API_KEY"` : "";
  const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
  return `curl ${location.origin}/v1/chat/completions \\\n  -H "Content-Type: application/json"${auth} \\\n  -d '${json}'`;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("chat-log").appendChild(div);
  return div;
}

$("chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.id = "answer-" + history.length;
  const body = requestBody();
  $("curl").textContent = curlOf(body);
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const started = performance.now();
  let first = null, usage = null, reason = null;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const error = await response.json();
      throw new Error(error.error ? error.error.message : response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!frame.startsWith("data: ")) continue;
        const data = frame.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const piece = (choice.delta && choice.delta.content) || "";
          if (piece && first === null) first = performance.now();
          answer.textContent += piece;
          if (choice.finish_reason) reason = choice.finish_reason;
        }
      }
    }
    history.push({ role: "assistant", content: answer.textContent });
  } catch (error) {
    if (error.name !== "AbortError") addMessage("error", "error: " + error.message);
  } finally {
    const total = (performance.now() - started) / 1000;
    const parts = [];
    if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
    if (first !== null) parts.push(`first token ${((first - started) / 1000).toFixed(3)} s`);
    parts.push(`total ${total.toFixed(2)} s`);
    if (usage && first !== null && total > 0) {
      parts.push(`${(usage.completion_tokens / total).toFixed(1)} tokens/s`);
    }
    if (reason) parts.push(`finish: ${reason}`);
    $("stats").textContent = parts.join(" · ");
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
});

$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => {
  history = [];
  $("chat-log").innerHTML = "";
  $("stats").textContent = "";
});

// ---- dashboard ----------------------------------------------------------------------

const POLL_MS = 1500;
const POINTS = 80;
const series = { throughput: [], running: [], waiting: [], kv: [], ttft: [] };
let previous = null;

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([^\s{]+)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

function buckets(samples, name) {
  const by = new Map();
  for (const s of samples) {
    if (s.name !== name + "_bucket") continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    by.set(le, (by.get(le) || 0) + s.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

function quantile(q, now, before) {
  const old = new Map(before || []);
  const counts = now.map(([le, c]) => [le, c - (old.get(le) || 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (total <= 0) return null;
  let lower = 0, below = 0;
  for (const [le, c] of counts) {
    if (c >= q * total) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((q * total - below) / Math.max(c - below, 1e-9));
    }
    lower = le;
    below = c;
  }
  return lower;
}

function fmtSeconds(v) {
  return v === null ? "-" : v < 1 ? (v * 1000).toFixed(0) + " ms" : v.toFixed(2) + " s";
}

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > POINTS) s.shift();
}

function draw(id, lines, percent = false) {
  const canvas = $(id);
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const all = lines.flatMap((l) => l.data);
  const max = percent ? 1 : Math.max(1e-9, ...all) * 1.1;
  ctx.strokeStyle = "#e3e6ea";
  ctx.beginPath();
  ctx.moveTo(0, h - 0.5); ctx.lineTo(w, h - 0.5); ctx.stroke();
  for (const line of lines) {
    ctx.strokeStyle = line.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    line.data.forEach((v, i) => {
      const x = (i / (POINTS - 1)) * w;
      const y = h - 4 - (v / max) * (h - 8);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#556";
  ctx.fillText(percent ? "100%" : max.toPrecision(3), 4, 12);
  const first = lines[0].data;
  canvas.dataset.points = first.length;
  canvas.dataset.last = first.length ? first[first.length - 1] : "";
  canvas.dataset.max = Math.max(0, ...first);
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.innerHTML = rows.length ? "" : "<tr><td class='muted'>none yet</td></tr>";
  for (const [k, v] of rows) {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td></td><td></td>";
    tr.children[0].textContent = k;
    tr.children[1].textContent = v;
    body.appendChild(tr);
  }
}

async function pollOnce() {
  const text = await (await api("/metrics")).text();
  const samples = parseMetrics(text);
  const now = performance.now() / 1000;
  const generated = sum(samples, "tokenmill:generation_tokens_total");
  const ttft = buckets(samples, "tokenmill:time_to_first_token_seconds");
  const itl = buckets(samples, "tokenmill:inter_token_latency_seconds");
  let rate = 0;
  if (previous) rate = Math.max(0, (generated - previous.generated) / (now - previous.time));
  const running = sum(samples, "tokenmill:num_requests_running");
  const waiting = sum(samples, "tokenmill:num_requests_waiting");
  const kv = sum(samples, "tokenmill:kv_cache_usage_perc");
  const queries = sum(samples, "tokenmill:prefix_cache_queries_total");
  const hits = sum(samples, "tokenmill:prefix_cache_hits_total");
  // Percentiles over the last poll interval; over all time when it saw no new sample
  // (or on the first poll, when there is no previous scrape).
  const recent = (b, key) => {
    const before = previous && previous[key];
    const window = quantile(0.5, b, before);
    return window === null ? [quantile(0.5, b), quantile(0.95, b)]
      : [window, quantile(0.95, b, before)];
  };
  const [ttft50, ttft95] = recent(ttft, "ttft");
  const [itl50, itl95] = recent(itl, "itl");
  push("throughput", rate);
  push("running", running);
  push("waiting", waiting);
  push("kv", kv);
  push("ttft", ttft95 || 0);
  $("m-throughput").textContent = rate.toFixed(1);
  $("m-queue").textContent = `${running} / ${waiting}`;
  $("m-kv").textContent = (kv * 100).toFixed(1) + "%";
  $("m-prefix").textContent = queries ? ((hits / queries) * 100).toFixed(1) + "%" : "-";
  $("m-ttft").textContent = `${fmtSeconds(ttft50)} / ${fmtSeconds(ttft95)}`;
  $("m-itl").textContent = `${fmtSeconds(itl50)} / ${fmtSeconds(itl95)}`;
  const ok = sum(samples, "tokenmill:request_success_total");
  const failed = sum(samples, "tokenmill:request_failure_total");
  $("m-requests").textContent = `${ok} / ${failed}`;
  draw("chart-throughput", [{ data: series.throughput, color: "#4ea1ff" }]);
  draw("chart-queue", [
    { data: series.running, color: "#2e9e5b" },
    { data: series.waiting, color: "#e07b00" },
  ]);
  draw("chart-kv", [{ data: series.kv, color: "#8a4dff" }], true);
  draw("chart-ttft", [{ data: series.ttft, color: "#d33" }]);
  const cache = samples.filter((s) => s.name === "tokenmill:response_cache_lookups_total");
  fillTable("t-cache", cache.map((s) => [`${s.labels.result} (${s.labels.kind})`, s.value]));
  const guard = samples.filter((s) => s.name === "tokenmill:guardrail_decisions_total");
  fillTable("t-guard", guard.map((s) => [`${s.labels.policy}: ${s.labels.action}`, s.value]));
  previous = { time: now, generated, ttft, itl };
}

async function pollDrift() {
  const response = await api("/v1/monitoring/drift");
  if (response.status === 404) {
    $("m-drift").textContent = "off";
    fillTable("t-drift", []);
    return;
  }
  const report = await response.json();
  $("m-drift").textContent = report.status;
  fillTable("t-drift", report.signals.map((s) => [
    s.name, s.p_value === null ? s.status : `${s.status} (p=${s.p_value.toPrecision(2)})`,
  ]));
}

let ticks = 0;
async function poll() {
  try {
    await pollOnce();
    if (ticks++ % 4 === 0) await pollDrift();
    $("conn").textContent = "connected";
  } catch (error) {
    if (error.message === "unauthorized") return;
    $("conn").textContent = "metrics unavailable: " + error.message;
  }
  setTimeout(poll, POLL_MS);
}

start();
